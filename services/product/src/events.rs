//! What order events do to stock, inside the consumer's transaction.
//!
//! - `OrderConfirmed`: the hold is sold (on hand and reserved go down).
//! - `OrderCancelled`: the hold is released; with `refund` (it had been confirmed), the
//!   sold units go back on hand.
//!
//! Cached products are invalidated after the effect commits.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use shop_kit::events::{HandleError, Handler, Received};
use shop_proto::shop::events::v1::{
    OrderCancelled, OrderConfirmed, OrderDelivered, OrderLine, OrderPlaced, OrderShipped,
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::{
    ProductCache,
    inventory::{self, ReleaseReason},
};

shop_kit::consumes! {
    /// The order events that move stock.
    pub enum OrderEvent {
        Confirmed(OrderConfirmed),
        Cancelled(OrderCancelled),
    }
    ignoring [OrderPlaced, OrderShipped, OrderDelivered]
}

pub struct OrderEvents {
    pub cache: ProductCache,
}

fn lines_of(lines: &[OrderLine]) -> Result<BTreeMap<Uuid, i32>, HandleError> {
    let mut map = BTreeMap::new();
    for line in lines {
        let id = Uuid::parse_str(&line.product_id)?;
        let quantity = i32::try_from(line.quantity).map_err(HandleError::permanent)?;
        *map.entry(id).or_insert(0) += quantity;
    }
    Ok(map)
}

/// The products an order event names (for cache invalidation).
fn products_of(event: &OrderEvent) -> Vec<Uuid> {
    let lines = match event {
        OrderEvent::Confirmed(confirmed) => &confirmed.lines,
        OrderEvent::Cancelled(cancelled) => &cancelled.lines,
    };
    lines.iter().filter_map(|line| Uuid::parse_str(&line.product_id).ok()).collect()
}

impl Handler for OrderEvents {
    type Event = OrderEvent;

    fn after_commit<'a>(&'a self, event: &'a Received<OrderEvent>) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.cache.invalidate(&products_of(&event.message)).await })
    }

    fn handle<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        event: &'a Received<OrderEvent>,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            match &event.message {
                OrderEvent::Confirmed(confirmed) => {
                    let order_id = Uuid::parse_str(&confirmed.order_id)?;
                    match inventory::commit(connection, order_id, &lines_of(&confirmed.lines)?)
                        .await
                        .map_err(HandleError::retryable)?
                    {
                        Some(_) => Ok(()),
                        // A paid order whose stock is gone needs a person: say so loudly (DLQ).
                        None => Err(HandleError::permanent(anyhow::anyhow!(
                            "order {order_id} was paid but its stock is no longer available"
                        ))),
                    }
                }
                OrderEvent::Cancelled(cancelled) => {
                    let order_id = Uuid::parse_str(&cancelled.order_id)?;
                    inventory::release(connection, order_id, ReleaseReason::Released)
                        .await
                        .map_err(HandleError::retryable)?;
                    if cancelled.refund {
                        inventory::return_units(connection, order_id).await.map_err(HandleError::retryable)?;
                    }
                    Ok(())
                }
            }
        })
    }
}
