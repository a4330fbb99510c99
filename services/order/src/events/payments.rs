//! What payment events do to orders, inside the consumer's transaction (so the state
//! change, the next event and the inbox record commit together).
//!
//! - `PaymentSucceeded`: `pending_payment` → `confirmed`, and `OrderConfirmed`. If the order
//!   was cancelled meanwhile, it stays cancelled and `OrderCancelled{refund}` gets the money
//!   back.
//! - `PaymentFailed`: `pending_payment` → `cancelled` with the reason, and `OrderCancelled`.

use futures::future::BoxFuture;
use shop_kit::events::{HandleError, Handler, Received, Topics, enqueue};
use shop_proto::shop::events::v1::{PaymentFailed, PaymentRefunded, PaymentSucceeded};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{domain::OrderStatus, error::Error, store};

shop_kit::consumes! {
    /// The payment events that move orders.
    pub enum PaymentEvent {
        Succeeded(PaymentSucceeded),
        Failed(PaymentFailed),
    }
    ignoring [PaymentRefunded]
}

pub struct PaymentEvents {
    pub topics: Topics,
}

impl Handler for PaymentEvents {
    type Event = PaymentEvent;

    fn handle<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        event: &'a Received<PaymentEvent>,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            match &event.message {
                PaymentEvent::Succeeded(paid) => self.succeeded(connection, &paid.order_id).await,
                PaymentEvent::Failed(failed) => self.failed(connection, &failed.order_id, &failed.reason).await,
            }
        })
    }
}

impl PaymentEvents {
    async fn succeeded(&self, connection: &mut PgConnection, order_id: &str) -> Result<(), HandleError> {
        let id = Uuid::parse_str(order_id)?;
        match store::transition(connection, id, OrderStatus::Confirmed, None).await {
            Ok(before) => {
                let event = self.topics.event(order_id, &super::confirmed(&before));
                enqueue(connection, &event).await?;
                tracing::info!(order.id = %id, "order confirmed");
                Ok(())
            }
            Err(Error::IllegalTransition { from, .. }) if from == OrderStatus::Cancelled.as_str() => {
                // Paid after it was cancelled: keep it cancelled and give the money back.
                let order = store::by_id(connection, id)
                    .await
                    .map_err(HandleError::retryable)?
                    .ok_or_else(|| HandleError::permanent(anyhow::anyhow!("order {id} vanished")))?;
                let event = self.topics.event(order_id, &super::cancelled(&order, "paid after cancellation", true));
                enqueue(connection, &event).await?;
                Ok(())
            }
            Err(Error::IllegalTransition { .. }) => Ok(()),
            Err(Error::OrderNotFound) => {
                Err(HandleError::permanent(anyhow::anyhow!("payment for unknown order {order_id}")))
            }
            Err(error) => Err(HandleError::retryable(error)),
        }
    }

    async fn failed(&self, connection: &mut PgConnection, order_id: &str, reason: &str) -> Result<(), HandleError> {
        let id = Uuid::parse_str(order_id)?;
        let reason = if reason.is_empty() { "payment_failed" } else { reason };
        match store::transition(connection, id, OrderStatus::Cancelled, Some(reason)).await {
            Ok(before) => {
                let event = self.topics.event(order_id, &super::cancelled(&before, reason, false));
                enqueue(connection, &event).await?;
                tracing::info!(order.id = %id, reason, "order cancelled: payment failed");
                Ok(())
            }
            Err(Error::IllegalTransition { .. }) => Ok(()),
            Err(Error::OrderNotFound) => {
                Err(HandleError::permanent(anyhow::anyhow!("payment for unknown order {order_id}")))
            }
            Err(error) => Err(HandleError::retryable(error)),
        }
    }
}
