//! What payment events do to orders, inside the consumer's transaction (so the state
//! change, the next event and the inbox record commit together).
//!
//! - `PaymentSucceeded`: `pending_payment` → `confirmed`, and `OrderConfirmed`. If the order
//!   was cancelled meanwhile, it stays cancelled and `OrderCancelled{refund}` gets the money
//!   back.
//! - `PaymentFailed`: `pending_payment` → `cancelled` with the reason, and `OrderCancelled`.

use futures::future::BoxFuture;
use prost::Message as _;
use shop_kit::events::{Event, HandleError, Handler, Incoming, enqueue};
use shop_proto::shop::events::v1::{OrderCancelled, OrderConfirmed, PaymentFailed, PaymentSucceeded};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::OrderStatus,
    error::Error,
    http::{OrderResponse, event_lines},
    store,
};

pub struct PaymentEvents {
    pub order_topic: String,
}

fn permanent(error: impl Into<anyhow::Error>) -> HandleError {
    HandleError::Permanent(error.into())
}

fn retryable(error: Error) -> HandleError {
    HandleError::Retryable(anyhow::anyhow!("{error}"))
}

impl Handler for PaymentEvents {
    fn handle<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        event: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            match event.ce_type.as_str() {
                "shop.payment.v1.PaymentSucceeded" => {
                    let paid = PaymentSucceeded::decode(event.payload.as_slice()).map_err(permanent)?;
                    self.succeeded(connection, &paid.order_id).await
                }
                "shop.payment.v1.PaymentFailed" => {
                    let failed = PaymentFailed::decode(event.payload.as_slice()).map_err(permanent)?;
                    self.failed(connection, &failed.order_id, &failed.reason).await
                }
                _ => Ok(()),
            }
        })
    }
}

impl PaymentEvents {
    async fn succeeded(&self, connection: &mut PgConnection, order_id: &str) -> Result<(), HandleError> {
        let id = Uuid::parse_str(order_id).map_err(permanent)?;
        match store::transition(connection, id, OrderStatus::Confirmed, None).await {
            Ok(before) => {
                let order = OrderResponse::from(before);
                let message = OrderConfirmed {
                    order_id: order_id.to_owned(),
                    user_id: order.user_id.to_string(),
                    lines: event_lines(&order),
                    total: Some(order.total.clone().into()),
                };
                let event = Event::new(&self.order_topic, order_id, "/shop/order", "OrderConfirmed", &message);
                enqueue(connection, &event).await.map_err(|error| retryable(error.into()))?;
                tracing::info!(order.id = %id, "order confirmed");
                Ok(())
            }
            Err(Error::IllegalTransition { from, .. }) if from == OrderStatus::Cancelled.as_str() => {
                // Paid after it was cancelled: keep it cancelled and give the money back.
                let order = store::by_id(connection, id)
                    .await
                    .map_err(retryable)?
                    .ok_or_else(|| permanent(anyhow::anyhow!("order vanished")))?;
                let order = OrderResponse::from(order);
                let message = OrderCancelled {
                    order_id: order_id.to_owned(),
                    user_id: order.user_id.to_string(),
                    lines: event_lines(&order),
                    total: Some(order.total.clone().into()),
                    reason: "paid after cancellation".into(),
                    refund: true,
                };
                let event = Event::new(&self.order_topic, order_id, "/shop/order", "OrderCancelled", &message);
                enqueue(connection, &event).await.map_err(|error| retryable(error.into()))?;
                Ok(())
            }
            Err(Error::IllegalTransition { .. }) => Ok(()),
            Err(Error::OrderNotFound) => Err(permanent(anyhow::anyhow!("payment for unknown order {order_id}"))),
            Err(error) => Err(retryable(error)),
        }
    }

    async fn failed(&self, connection: &mut PgConnection, order_id: &str, reason: &str) -> Result<(), HandleError> {
        let id = Uuid::parse_str(order_id).map_err(permanent)?;
        let reason = if reason.is_empty() { "payment_failed" } else { reason };
        match store::transition(connection, id, OrderStatus::Cancelled, Some(reason)).await {
            Ok(before) => {
                let order = OrderResponse::from(before);
                let message = OrderCancelled {
                    order_id: order_id.to_owned(),
                    user_id: order.user_id.to_string(),
                    lines: event_lines(&order),
                    total: Some(order.total.clone().into()),
                    reason: reason.to_owned(),
                    refund: false,
                };
                let event = Event::new(&self.order_topic, order_id, "/shop/order", "OrderCancelled", &message);
                enqueue(connection, &event).await.map_err(|error| retryable(error.into()))?;
                tracing::info!(order.id = %id, reason, "order cancelled: payment failed");
                Ok(())
            }
            Err(Error::IllegalTransition { .. }) => Ok(()),
            Err(Error::OrderNotFound) => Err(permanent(anyhow::anyhow!("payment for unknown order {order_id}"))),
            Err(error) => Err(retryable(error)),
        }
    }
}
