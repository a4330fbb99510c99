//! `shop.order.v1.OrderService`: a thin adapter for other services and tools.

use shop_kit::auth::grpc_caller;
use shop_proto::{
    shop::order::v1::{self as pb, order_service_server::OrderService},
    time::timestamp,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{app::AppState, domain::Order, error::Error, fulfilment, store};

pub struct OrderGrpc {
    state: AppState,
}

impl OrderGrpc {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl OrderService for OrderGrpc {
    #[tracing::instrument(skip_all, fields(order.id = %request.get_ref().order_id))]
    async fn get_order(&self, request: Request<pb::GetOrderRequest>) -> Result<Response<pb::GetOrderResponse>, Status> {
        let caller = grpc_caller(&request)?;
        let id =
            Uuid::parse_str(&request.get_ref().order_id).map_err(|_| Error::invalid("order_id", "must be a UUID"))?;
        let mut connection = self.state.pool().acquire().await.map_err(Error::from)?;
        let order = store::by_id(&mut connection, id).await?.ok_or(Error::OrderNotFound)?;
        caller.require_owner_or_admin(order.user_id).map_err(Error::from)?;
        Ok(Response::new(pb::GetOrderResponse { order: Some(to_proto(order)) }))
    }

    #[tracing::instrument(skip_all, fields(order.id = %request.get_ref().order_id))]
    async fn ship_order(
        &self,
        request: Request<pb::ShipOrderRequest>,
    ) -> Result<Response<pb::ShipOrderResponse>, Status> {
        let caller = grpc_caller(&request)?;
        let request = request.into_inner();
        let id = Uuid::parse_str(&request.order_id).map_err(|_| Error::invalid("order_id", "must be a UUID"))?;
        let order = fulfilment::ship(&self.state, &caller, id, &request.carrier, &request.tracking_number).await?;
        Ok(Response::new(pb::ShipOrderResponse { order: Some(to_proto(order)) }))
    }

    #[tracing::instrument(skip_all, fields(order.id = %request.get_ref().order_id))]
    async fn deliver_order(
        &self,
        request: Request<pb::DeliverOrderRequest>,
    ) -> Result<Response<pb::DeliverOrderResponse>, Status> {
        let caller = grpc_caller(&request)?;
        let id =
            Uuid::parse_str(&request.get_ref().order_id).map_err(|_| Error::invalid("order_id", "must be a UUID"))?;
        let order = fulfilment::deliver(&self.state, &caller, id).await?;
        Ok(Response::new(pb::DeliverOrderResponse { order: Some(to_proto(order)) }))
    }
}

fn to_proto(order: Order) -> pb::Order {
    pb::Order {
        id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        status: order.status.as_str().to_owned(),
        total: Some(order.total().into()),
        items: order
            .lines
            .into_iter()
            .map(|line| pb::OrderItem {
                product_id: line.product_id.to_string(),
                quantity: i64::from(line.quantity),
                unit_price: Some(line.unit_price().into()),
                name: line.name,
            })
            .collect(),
        failure_reason: order.failure_reason.unwrap_or_default(),
        shipment: order.shipment.map(|shipment| pb::Shipment {
            carrier: shipment.carrier,
            tracking_number: shipment.tracking_number,
            shipped_at: Some(timestamp(shipment.shipped_at)),
        }),
        delivered_at: order.delivered_at.map(timestamp),
        created_at: Some(timestamp(order.created_at)),
        updated_at: Some(timestamp(order.updated_at)),
    }
}
