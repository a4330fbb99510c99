//! What the payment service does with order events, inside the consumer's transaction
//! (so the payment row and the inbox record commit together): it records what is to be
//! done, and the [`crate::worker`] does it, outside any transaction.

use std::sync::Arc;

use futures::future::BoxFuture;
use shop_kit::events::{HandleError, Handler, Received};
use shop_proto::shop::events::v1::{OrderCancelled, OrderConfirmed, OrderDelivered, OrderPlaced, OrderShipped};
use sqlx::PgConnection;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    domain::{NewPayment, PaymentStatus},
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
    /// Wakes the payment worker once a payment is due (it also polls).
    pub wake: Arc<Notify>,
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
                OrderEvent::Placed(placed) => self.placed(connection, placed).await,
                OrderEvent::Cancelled(cancelled) => self.cancelled(connection, cancelled).await,
            }
        })
    }
}

impl OrderEvents {
    /// Records the order's payment as `pending`; the worker charges it after this commits.
    async fn placed(&self, connection: &mut PgConnection, order: &OrderPlaced) -> Result<(), HandleError> {
        let order_id = Uuid::parse_str(&order.order_id)?;
        let user_id = Uuid::parse_str(&order.user_id)?;
        let total = order
            .total
            .as_ref()
            .ok_or_else(|| HandleError::permanent(anyhow::anyhow!("OrderPlaced without a total")))?;
        let payment = NewPayment {
            id: Uuid::now_v7(),
            order_id,
            user_id,
            amount: total.amount,
            currency: total.currency.clone(),
            card_token: order.card_token.clone(),
        };
        if store::insert_pending(connection, &payment).await.map_err(HandleError::retryable)? {
            tracing::info!(order.id = %order_id, payment.id = %payment.id, "payment pending");
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Asks for the refund of a paid order; the worker gives the money back.
    async fn cancelled(&self, connection: &mut PgConnection, order: &OrderCancelled) -> Result<(), HandleError> {
        if !order.refund {
            return Ok(());
        }
        let order_id = Uuid::parse_str(&order.order_id)?;
        match store::request_refund(connection, order_id).await.map_err(HandleError::retryable)? {
            Some(PaymentStatus::Succeeded) => {
                tracing::info!(order.id = %order_id, "refund pending");
                self.wake.notify_one();
            }
            // Asked for before: nothing more to give back.
            Some(PaymentStatus::RefundPending | PaymentStatus::Refunded) => {}
            // The order service asks for a refund only after PaymentSucceeded: anything
            // else is not ours to refund.
            other => tracing::warn!(order.id = %order_id, payment.status = ?other.map(PaymentStatus::as_str),
                "refund asked for an order without a succeeded payment; nothing refunded"),
        }
        Ok(())
    }
}
