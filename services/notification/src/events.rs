//! What each event becomes: one notification, stored in the consumer's transaction.

use futures::future::BoxFuture;
use prost::Message as _;
use shop_kit::events::{HandleError, Handler, Incoming};
use shop_proto::shop::events::v1::{OrderCancelled, OrderConfirmed, PaymentRefunded, UserRegistered};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::templates::{self, Rendered};

pub struct Events {
    /// Whether email can be sent at all (SMTP configured).
    pub email_enabled: bool,
}

fn permanent(error: impl Into<anyhow::Error>) -> HandleError {
    HandleError::Permanent(error.into())
}

fn retryable(error: sqlx::Error) -> HandleError {
    HandleError::Retryable(error.into())
}

impl Handler for Events {
    fn handle<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        event: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let payload = event.payload.as_slice();
            // The order a message is about: one message per order and template (see the
            // migration `one_notification_per_order`).
            let (user, order, rendered) = match event.ce_type.as_str() {
                "shop.user.v1.UserRegistered" => {
                    let user = UserRegistered::decode(payload).map_err(permanent)?;
                    let id = Uuid::parse_str(&user.user_id).map_err(permanent)?;
                    sqlx::query(
                        "INSERT INTO recipients (user_id, email, name) VALUES ($1, $2, $3) \
                         ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, name = excluded.name",
                    )
                    .bind(id)
                    .bind(&user.email)
                    .bind(&user.name)
                    .execute(&mut *connection)
                    .await
                    .map_err(retryable)?;
                    (user.user_id, None, templates::welcome(&user.name))
                }
                "shop.order.v1.OrderConfirmed" => {
                    let order = OrderConfirmed::decode(payload).map_err(permanent)?;
                    let rendered = templates::order_confirmed(&order.order_id, &order.lines, order.total.as_ref());
                    (order.user_id, Some(order.order_id), rendered)
                }
                "shop.order.v1.OrderCancelled" => {
                    let order = OrderCancelled::decode(payload).map_err(permanent)?;
                    let rendered =
                        templates::order_cancelled(&order.order_id, &order.reason, order.refund, order.total.as_ref());
                    (order.user_id, Some(order.order_id), rendered)
                }
                "shop.payment.v1.PaymentRefunded" => {
                    let refund = PaymentRefunded::decode(payload).map_err(permanent)?;
                    let rendered = templates::payment_refunded(&refund.order_id, refund.amount.as_ref());
                    (refund.user_id, Some(refund.order_id), rendered)
                }
                _ => return Ok(()),
            };
            let user = Uuid::parse_str(&user).map_err(permanent)?;
            let order = order.map(|order| Uuid::parse_str(&order)).transpose().map_err(permanent)?;
            self.store(connection, event.ce_id, user, order, &rendered).await
        })
    }
}

impl Events {
    async fn store(
        &self,
        connection: &mut PgConnection,
        event_id: Uuid,
        user: Uuid,
        order: Option<Uuid>,
        rendered: &Rendered,
    ) -> Result<(), HandleError> {
        let email: Option<String> = if self.email_enabled {
            sqlx::query_scalar("SELECT email FROM recipients WHERE user_id = $1")
                .bind(user)
                .fetch_optional(&mut *connection)
                .await
                .map_err(retryable)?
        } else {
            None
        };
        let channel = if email.is_some() { "email" } else { "log" };
        // Either key may conflict: the event was seen before (a redelivery the inbox did not
        // catch) or the customer already has this message about this order.
        sqlx::query(
            "INSERT INTO notifications (id, event_id, user_id, channel, recipient, template, subject, body, order_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(event_id)
        .bind(user)
        .bind(channel)
        .bind(&email)
        .bind(rendered.template)
        .bind(&rendered.subject)
        .bind(&rendered.body)
        .bind(order)
        .execute(&mut *connection)
        .await
        .map_err(retryable)?;
        sqlx::query("SELECT pg_notify('shop_notifications', '')").execute(connection).await.map_err(retryable)?;
        Ok(())
    }
}
