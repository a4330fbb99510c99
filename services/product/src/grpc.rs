//! `shop.product.v1.ProductService`: internal methods only (ADR 0012). Prices and products are
//! read by the cart and order services; stock is held and released by the order service, for
//! the checkout it is placing, within what one checkout can contain
//! ([`shop_proto::limits`]). Customers and admins use REST.

use shop_proto::time::timestamp;
use std::collections::BTreeMap;

use chrono::{SubsecRound as _, Utc};
use shop_kit::auth::grpc_service;
use shop_proto::limits::{MAX_CHECKOUT_LINES, MAX_LINE_QUANTITY};
use shop_proto::shop::product::v1::{self as pb, product_service_server::ProductService};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    app::AppState,
    error::Error,
    store::{
        self, Product,
        inventory::{self, ReleaseReason, Reservation},
    },
};

/// Who may read products and prices.
const READERS: &[&str] = &["cart", "order"];

/// Who may hold and release stock: the checkout.
const HOLDERS: &[&str] = &["order"];

/// How old an order id may be when its stock is held: the checkout mints it just before.
const ORDER_ID_MAX_AGE: chrono::Duration = chrono::Duration::minutes(10);

/// How far ahead of this clock an order id may be (clock skew between the services).
const ORDER_ID_MAX_SKEW: chrono::Duration = chrono::Duration::minutes(1);

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

/// A hold is for a checkout being placed now: its order id is a UUIDv7 minted moments ago.
fn fresh_order_id(order_id: Uuid, now: chrono::DateTime<Utc>) -> Result<(), Error> {
    let minted = order_id.get_timestamp().and_then(|stamp| {
        let (seconds, nanos) = stamp.to_unix();
        chrono::DateTime::from_timestamp(i64::try_from(seconds).ok()?, nanos)
    });
    match minted {
        Some(minted) if minted >= now - ORDER_ID_MAX_AGE && minted <= now + ORDER_ID_MAX_SKEW => Ok(()),
        _ => Err(Error::invalid(
            "order_id",
            "must be the id of a checkout being placed now (a UUIDv7 of the last 10 minutes)",
        )),
    }
}

#[tonic::async_trait]
impl ProductService for ProductGrpc {
    #[tracing::instrument(skip_all, fields(product.id = %request.get_ref().product_id))]
    async fn get_product(
        &self,
        request: Request<pb::GetProductRequest>,
    ) -> Result<Response<pb::GetProductResponse>, Status> {
        grpc_service(&request, READERS)?;
        let id = parse_uuid(&request.get_ref().product_id, "product_id")?;
        let product = self.state.product(id).await?;
        Ok(Response::new(pb::GetProductResponse { product: Some(to_proto(product)) }))
    }

    #[tracing::instrument(skip_all, fields(count = request.get_ref().product_ids.len()))]
    async fn batch_get_products(
        &self,
        request: Request<pb::BatchGetProductsRequest>,
    ) -> Result<Response<pb::BatchGetProductsResponse>, Status> {
        grpc_service(&request, READERS)?;
        let ids = &request.get_ref().product_ids;
        if ids.len() > MAX_CHECKOUT_LINES {
            return Err(Error::invalid("product_ids", format!("at most {MAX_CHECKOUT_LINES} ids")).into());
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
        let caller = grpc_service(&request, HOLDERS)?;
        // The hold's owner: the customer the checkout is for (also the audit trail).
        let owner = caller.acting_for.ok_or_else(|| {
            Error::invalid("shop-acting-for", "a stock hold needs the customer it is for (shop-acting-for metadata)")
        })?;
        let message = request.get_ref();
        let order_id = parse_uuid(&message.order_id, "order_id")?;
        fresh_order_id(order_id, Utc::now())?;
        if message.items.is_empty() || message.items.len() > MAX_CHECKOUT_LINES {
            return Err(Error::invalid("items", format!("must hold 1 to {MAX_CHECKOUT_LINES} lines")).into());
        }
        let mut lines: BTreeMap<Uuid, i32> = BTreeMap::new();
        for (index, line) in message.items.iter().enumerate() {
            let product_id = parse_uuid(&line.product_id, &format!("items[{index}].product_id"))?;
            let total = lines.entry(product_id).or_insert(0);
            let quantity = i64::from(*total).saturating_add(line.quantity);
            if line.quantity < 1 || quantity > MAX_LINE_QUANTITY {
                return Err(Error::invalid(
                    &format!("items[{index}].quantity"),
                    format!("must be 1 to {MAX_LINE_QUANTITY} units of a product in all, as one cart line holds"),
                )
                .into());
            }
            *total = i32::try_from(quantity).unwrap_or(i32::MAX);
        }
        let ttl = chrono::Duration::from_std(self.state.reservation_ttl()).unwrap_or(chrono::Duration::minutes(15));
        // Postgres keeps microseconds: the first answer must equal what a retry reads back.
        let expires_at = (Utc::now() + ttl).trunc_subsecs(6);
        let mut connection = self.state.pool().acquire().await.map_err(Error::from)?;
        let (answer, touched) = inventory::reserve(&mut connection, order_id, owner, &lines, expires_at).await?;
        tracing::info!(order.id = %order_id, enduser.id = %owner, lines = lines.len(), "stock held for a checkout");
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
        grpc_service(&request, HOLDERS)?;
        let order_id = parse_uuid(&request.get_ref().order_id, "order_id")?;
        let mut connection = self.state.pool().acquire().await.map_err(Error::from)?;
        let (units, touched) = inventory::release(&mut connection, order_id, ReleaseReason::Released).await?;
        self.state.cache().invalidate(&touched).await;
        Ok(Response::new(pb::ReleaseStockResponse { released_units: units }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_order_id_minted_moments_ago_can_hold_stock() {
        let now = Utc::now();
        let at = |offset: chrono::Duration| {
            let when = now + offset;
            let seconds = u64::try_from(when.timestamp()).unwrap();
            Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, seconds, when.timestamp_subsec_nanos()))
        };
        assert!(fresh_order_id(at(chrono::Duration::zero()), now).is_ok());
        assert!(fresh_order_id(at(chrono::Duration::minutes(-9)), now).is_ok());
        assert!(fresh_order_id(at(chrono::Duration::seconds(30)), now).is_ok());
        assert!(fresh_order_id(at(chrono::Duration::minutes(-11)), now).is_err());
        assert!(fresh_order_id(at(chrono::Duration::minutes(2)), now).is_err());
        assert!(fresh_order_id(Uuid::new_v4(), now).is_err(), "a v4 id carries no time");
        assert!(fresh_order_id(Uuid::nil(), now).is_err());
    }
}
