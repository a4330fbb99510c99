//! Fulfilment: an admin ships a confirmed order (carrier and tracking number), then marks it
//! delivered. Each step moves the order through the state machine, records its details and
//! enqueues its event (`OrderShipped`, `OrderDelivered`) in one transaction, whatever the
//! transport (REST or gRPC).

use shop_kit::{auth::Caller, error::Problem, events::enqueue};
use uuid::Uuid;

use crate::{
    app::AppState,
    domain::{Order, OrderStatus, Shipment},
    error::Error,
    events, store,
};

fn require_admin(caller: &Caller) -> Result<(), Error> {
    if caller.is_admin() { Ok(()) } else { Err(Problem::forbidden("only an admin ships and delivers orders").into()) }
}

/// Ships a confirmed order: 409 `illegal_transition` from any other state.
pub async fn ship(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    carrier: &str,
    tracking_number: &str,
) -> Result<Order, Error> {
    require_admin(caller)?;
    let (carrier, tracking_number) = Shipment::validate(carrier, tracking_number).map_err(Error::Validation)?;
    let mut transaction = state.pool().begin().await?;
    store::transition(&mut transaction, id, OrderStatus::Shipped, None).await?;
    store::record_shipment(&mut transaction, id, &carrier, &tracking_number).await?;
    let order = store::by_id(&mut transaction, id).await?.ok_or(Error::OrderNotFound)?;
    enqueue(&mut transaction, &state.topics().event(id.to_string(), &events::shipped(&order))).await?;
    transaction.commit().await?;
    tracing::info!(order.id = %id, carrier, "order shipped");
    Ok(order)
}

/// Marks a shipped order delivered: 409 `illegal_transition` from any other state.
pub async fn deliver(state: &AppState, caller: &Caller, id: Uuid) -> Result<Order, Error> {
    require_admin(caller)?;
    let mut transaction = state.pool().begin().await?;
    store::transition(&mut transaction, id, OrderStatus::Delivered, None).await?;
    store::record_delivery(&mut transaction, id).await?;
    let order = store::by_id(&mut transaction, id).await?.ok_or(Error::OrderNotFound)?;
    enqueue(&mut transaction, &state.topics().event(id.to_string(), &events::delivered(&order))).await?;
    transaction.commit().await?;
    tracing::info!(order.id = %id, "order delivered");
    Ok(order)
}
