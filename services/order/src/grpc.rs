//! `shop.order.v1.OrderService`: a thin adapter for other services and tools.

use shop_kit::auth::grpc_caller;
use shop_proto::shop::order::v1::{self as pb, order_service_server::OrderService};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{app::AppState, error::Error, http::OrderResponse, store};

pub struct OrderGrpc {
    state: AppState,
}

impl OrderGrpc {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0) }
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
        let order = OrderResponse::from(order);
        let status = order.status.as_str().to_owned();
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(pb::Order {
                id: order.id.to_string(),
                user_id: order.user_id.to_string(),
                status,
                items: order
                    .items
                    .into_iter()
                    .map(|item| pb::OrderItem {
                        product_id: item.product_id.to_string(),
                        name: item.name,
                        quantity: item.quantity,
                        unit_price: Some(item.unit_price.into()),
                    })
                    .collect(),
                total: Some(order.total.into()),
                failure_reason: order.failure_reason.unwrap_or_default(),
                created_at: Some(timestamp(order.created_at)),
                updated_at: Some(timestamp(order.updated_at)),
            }),
        }))
    }
}
