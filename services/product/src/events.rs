//! What order events do to stock, inside the consumer's transaction.
//!
//! - `OrderConfirmed`: the hold is sold (on hand and reserved go down).
//! - `OrderCancelled`: the hold is released; with `refund` (it had been confirmed), the
//!   sold units go back on hand.
//!
//! Cached products are invalidated after the effect commits.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use prost::Message as _;
use shop_kit::events::{HandleError, Handler, Incoming};
use shop_proto::shop::events::v1::{OrderCancelled, OrderConfirmed, OrderLine};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::{
    ProductCache,
    inventory::{self, ReleaseReason},
};

pub struct OrderEvents {
    pub cache: ProductCache,
}

fn permanent(error: impl Into<anyhow::Error>) -> HandleError {
    HandleError::Permanent(error.into())
}

fn retryable(error: crate::error::Error) -> HandleError {
    HandleError::Retryable(anyhow::anyhow!("{error}"))
}

fn lines_of(lines: &[OrderLine]) -> Result<BTreeMap<Uuid, i32>, HandleError> {
    let mut map = BTreeMap::new();
    for line in lines {
        let id = Uuid::parse_str(&line.product_id).map_err(permanent)?;
        let quantity = i32::try_from(line.quantity).map_err(permanent)?;
        *map.entry(id).or_insert(0) += quantity;
    }
    Ok(map)
}

/// The products an order event names (for cache invalidation).
fn products_of(event: &Incoming) -> Vec<Uuid> {
    let lines = match event.ce_type.as_str() {
        "shop.order.v1.OrderConfirmed" => {
            OrderConfirmed::decode(event.payload.as_slice()).map(|e| e.lines).unwrap_or_default()
        }
        "shop.order.v1.OrderCancelled" => {
            OrderCancelled::decode(event.payload.as_slice()).map(|e| e.lines).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    lines.iter().filter_map(|line| Uuid::parse_str(&line.product_id).ok()).collect()
}

impl Handler for OrderEvents {
    fn after_commit<'a>(&'a self, event: &'a Incoming) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.cache.invalidate(&products_of(event)).await })
    }

    fn handle<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        event: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            match event.ce_type.as_str() {
                "shop.order.v1.OrderConfirmed" => {
                    let confirmed = OrderConfirmed::decode(event.payload.as_slice()).map_err(permanent)?;
                    let order_id = Uuid::parse_str(&confirmed.order_id).map_err(permanent)?;
                    match inventory::commit(connection, order_id, &lines_of(&confirmed.lines)?)
                        .await
                        .map_err(retryable)?
                    {
                        Some(_) => Ok(()),
                        // A paid order whose stock is gone needs a person: say so loudly (DLQ).
                        None => Err(permanent(anyhow::anyhow!(
                            "order {order_id} was paid but its stock is no longer available"
                        ))),
                    }
                }
                "shop.order.v1.OrderCancelled" => {
                    let cancelled = OrderCancelled::decode(event.payload.as_slice()).map_err(permanent)?;
                    let order_id = Uuid::parse_str(&cancelled.order_id).map_err(permanent)?;
                    inventory::release(connection, order_id, ReleaseReason::Released).await.map_err(retryable)?;
                    if cancelled.refund {
                        inventory::return_units(connection, order_id).await.map_err(retryable)?;
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        })
    }
}
