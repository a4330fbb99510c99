//! What the payment service does with order events, inside the consumer's transaction
//! (so the payment row, its event and the inbox record commit together).

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use shop_kit::events::{HandleError, Handler, Received, Topics, enqueue};
use shop_proto::shop::{
    common::v1::Money,
    events::v1::{
        OrderCancelled, OrderConfirmed, OrderDelivered, OrderPlaced, OrderShipped, PaymentFailed, PaymentRefunded,
        PaymentSucceeded,
    },
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{NewPayment, PaymentStatus},
    provider::{Charge, PaymentProvider},
    store,
};

shop_kit::consumes! {
    /// The order events that charge and refund.
    pub enum OrderEvent {
        Placed(OrderPlaced),
        Cancelled(OrderCancelled),
    }
    ignoring [OrderConfirmed, OrderShipped, OrderDelivered]
}

pub struct OrderEvents {
    pub provider: Arc<dyn PaymentProvider>,
    pub topics: Topics,
    pub charge_attempts: u32,
}

impl Handler for OrderEvents {
    type Event = OrderEvent;

    fn handle<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        event: &'a Received<OrderEvent>,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            match &event.message {
                OrderEvent::Placed(placed) => self.placed(connection, placed.clone()).await,
                OrderEvent::Cancelled(cancelled) => self.cancelled(connection, cancelled.clone()).await,
            }
        })
    }
}

impl OrderEvents {
    async fn placed(&self, connection: &mut PgConnection, order: OrderPlaced) -> Result<(), HandleError> {
        let order_id = Uuid::parse_str(&order.order_id)?;
        let user_id = Uuid::parse_str(&order.user_id)?;
        let total = order
            .total
            .clone()
            .ok_or_else(|| HandleError::permanent(anyhow::anyhow!("OrderPlaced without a total")))?;
        if store::exists_for_order(connection, order_id).await.map_err(HandleError::retryable)? {
            return Ok(());
        }
        let payment_id = Uuid::now_v7();
        // Keyed by the order, so a redelivered event reuses the provider's idempotency key.
        let (outcome, attempts) = self.charge(&format!("charge-{order_id}"), &order.card_token, &total).await;
        let (status, failure_reason) = PaymentStatus::of_charge(&outcome);
        let payment = NewPayment {
            id: payment_id,
            order_id,
            user_id,
            amount: total.amount,
            currency: total.currency.clone(),
            status,
            failure_reason,
            attempts,
        };
        store::insert(connection, &payment).await.map_err(HandleError::retryable)?;
        let key = order_id.to_string();
        let event = match outcome {
            Charge::Succeeded => {
                let message = PaymentSucceeded {
                    payment_id: payment_id.to_string(),
                    order_id: key.clone(),
                    user_id: order.user_id,
                    amount: Some(total),
                };
                self.topics.event(key, &message)
            }
            Charge::Declined { reason } => {
                let message = PaymentFailed {
                    payment_id: payment_id.to_string(),
                    order_id: key.clone(),
                    user_id: order.user_id,
                    amount: Some(total),
                    reason,
                };
                self.topics.event(key, &message)
            }
        };
        enqueue(connection, &event).await?;
        tracing::info!(order.id = %order_id, payment.status = status.as_str(), "payment taken");
        Ok(())
    }

    /// Charges, retrying transient failures with backoff; after the last attempt a
    /// transient failure counts as a decline (`processing_error`).
    async fn charge(&self, key: &str, card_token: &str, total: &Money) -> (Charge, u32) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.provider.charge(key, card_token, total.amount, &total.currency).await {
                Ok(outcome) => return (outcome, attempt),
                Err(error) if attempt >= self.charge_attempts => {
                    tracing::warn!(%error, attempt, "charge failed transiently too often; declining");
                    return (Charge::Declined { reason: "processing_error".into() }, attempt);
                }
                Err(error) => {
                    tracing::info!(%error, attempt, "charge failed transiently; retrying");
                    tokio::time::sleep(Duration::from_millis(20 * 2_u64.pow(attempt.min(8)))).await;
                }
            }
        }
    }

    async fn cancelled(&self, connection: &mut PgConnection, order: OrderCancelled) -> Result<(), HandleError> {
        if !order.refund {
            return Ok(());
        }
        let order_id = Uuid::parse_str(&order.order_id)?;
        let Some(payment) = store::succeeded_for_order(connection, order_id).await.map_err(HandleError::retryable)?
        else {
            return Ok(());
        };
        self.provider
            .refund(&format!("refund-{}", payment.id), payment.amount, &payment.currency)
            .await
            .map_err(HandleError::retryable)?;
        store::set_status(connection, payment.id, PaymentStatus::Refunded).await.map_err(HandleError::retryable)?;
        let message = PaymentRefunded {
            payment_id: payment.id.to_string(),
            order_id: order.order_id.clone(),
            user_id: order.user_id,
            amount: Some(Money { amount: payment.amount, currency: payment.currency }),
        };
        let event = self.topics.event(order.order_id, &message);
        enqueue(connection, &event).await?;
        Ok(())
    }
}
