//! `shop.product.v1.ProductService`: reads for the cart and order services, and stock holds.

use shop_proto::time::timestamp;
use std::collections::BTreeMap;

use chrono::{SubsecRound as _, Utc};
use shop_kit::auth::grpc_caller;
use shop_proto::shop::product::v1::{self as pb, product_service_server::ProductService};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    app::AppState,
    domain::Quantity,
    error::Error,
    store::{
        self, Product,
        inventory::{self, ReleaseReason, Reservation},
    },
};

/// The most ids or lines one call may carry.
const MAX_BATCH: usize = 100;

pub struct ProductGrpc {
    state: AppState,
}

impl ProductGrpc {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn parse_uuid(text: &str, field: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(text).map_err(|_| Error::invalid(field, "must be a UUID"))
}

fn to_proto(product: Product) -> pb::Product {
    pb::Product {
        id: product.id.to_string(),
        sku: product.sku,
        name: product.name,
        description: product.description,
        price: Some(shop_proto::shop::common::v1::Money { amount: product.price_amount, currency: product.currency }),
        categories: product.categories,
        stock_available: product.stock_available,
        image_url: product.image_url.unwrap_or_default(),
        active: product.active,
        created_at: Some(timestamp(product.created_at)),
        updated_at: Some(timestamp(product.updated_at)),
    }
}

#[tonic::async_trait]
impl ProductService for ProductGrpc {
    #[tracing::instrument(skip_all, fields(product.id = %request.get_ref().product_id))]
    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        let id = parse_uuid(&request.get_ref().product_id, "product_id")?;
        let product = self.state.product(id).await?;
        Ok(Response::new(pb::GetProductResponse { product: Some(to_proto(product)) }))
    }

    #[tracing::instrument(skip_all, fields(count = request.get_ref().product_ids.len()))]
    async fn batch_get_products(
        &self,
        request: Request<pb::BatchGetProductsRequest>,
    ) -> Result<Response<pb::BatchGetProductsResponse>, Status> {
        let ids = &request.get_ref().product_ids;
        if ids.len() > MAX_BATCH {
            return Err(Error::invalid("product_ids", format!("at most {MAX_BATCH} ids")).into());
        }
        let ids = ids.iter().map(|id| parse_uuid(id, "product_ids")).collect::<Result<Vec<_>, _>>()?;
        let mut connection = self.state.pool().acquire().await.map_err(Error::from)?;
        let products = store::products::by_ids(&mut connection, &ids).await?;
        Ok(Response::new(pb::BatchGetProductsResponse { products: products.into_iter().map(to_proto).collect() }))
    }

    #[tracing::instrument(skip_all, fields(order.id = %request.get_ref().order_id, lines = request.get_ref().items.len()))]
    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        let caller = grpc_caller(&request)?;
        let message = request.get_ref();
        let order_id = parse_uuid(&message.order_id, "order_id")?;
        if message.items.is_empty() || message.items.len() > MAX_BATCH {
            return Err(Error::invalid("items", format!("must hold 1 to {MAX_BATCH} lines")).into());
        }
        let mut lines: BTreeMap<Uuid, i32> = BTreeMap::new();
        for (index, line) in message.items.iter().enumerate() {
            let product_id = parse_uuid(&line.product_id, &format!("items[{index}].product_id"))?;
            let quantity = Quantity::parse(line.quantity)
                .map_err(|text| Error::invalid(&format!("items[{index}].quantity"), text))?;
            let total = lines.entry(product_id).or_insert(0);
            *total = total.saturating_add(quantity.get());
        }
        let ttl = chrono::Duration::from_std(self.state.reservation_ttl()).unwrap_or(chrono::Duration::minutes(15));
        // Postgres keeps microseconds: the first answer must equal what a retry reads back.
        let expires_at = (Utc::now() + ttl).trunc_subsecs(6);
        let mut connection = self.state.pool().acquire().await.map_err(Error::from)?;
        let (answer, touched) =
            inventory::reserve(&mut connection, order_id, caller.user_id, &lines, expires_at).await?;
        self.state.cache().invalidate(&touched).await;
        match answer {
            Reservation::Held { expires_at } => {
                Ok(Response::new(pb::ReserveStockResponse { expires_at: Some(timestamp(expires_at)) }))
            }
            Reservation::Rejected { detail } => Err(Error::OutOfStock { detail }.into()),
        }
    }

    #[tracing::instrument(skip_all, fields(order.id = %request.get_ref().order_id))]
    async fn release_stock(
        &self,
        request: Request<pb::ReleaseStockRequest>,
    ) -> Result<Response<pb::ReleaseStockResponse>, Status> {
        let caller = grpc_caller(&request)?;
        let order_id = parse_uuid(&request.get_ref().order_id, "order_id")?;
        let mut connection = self.state.pool().acquire().await.map_err(Error::from)?;
        match inventory::owner(&mut connection, order_id).await? {
            None => return Ok(Response::new(pb::ReleaseStockResponse { released_units: 0 })),
            Some(owner) => caller.require_owner_or_admin(owner).map_err(Error::from)?,
        }
        let (units, touched) = inventory::release(&mut connection, order_id, ReleaseReason::Released).await?;
        self.state.cache().invalidate(&touched).await;
        Ok(Response::new(pb::ReleaseStockResponse { released_units: units }))
    }
}
