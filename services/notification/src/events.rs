//! What each event becomes: one notification, stored in the consumer's transaction.

use futures::future::BoxFuture;
use shop_kit::events::{HandleError, Handler, Received};
use shop_proto::shop::events::v1::{
    OrderCancelled, OrderConfirmed, OrderPlaced, PaymentFailed, PaymentRefunded, PaymentSucceeded, UserRegistered,
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::templates::{self, Rendered};

pub struct Events {
    /// Whether email can be sent at all (SMTP configured).
    pub email_enabled: bool,
}

shop_kit::consumes! {
    /// The events that become a message to a customer.
    pub enum Notifiable {
        Registered(UserRegistered),
        Confirmed(OrderConfirmed),
        Cancelled(OrderCancelled),
        Refunded(PaymentRefunded),
    }
    ignoring [OrderPlaced, PaymentSucceeded, PaymentFailed]
}

impl Handler for Events {
    type Event = Notifiable;

    fn handle<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        event: &'a Received<Notifiable>,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            // The order a message is about: one message per order and template (see the
            // migration `one_notification_per_order`).
            let (user, order, rendered) = match &event.message {
                Notifiable::Registered(user) => {
                    let id = Uuid::parse_str(&user.user_id)?;
                    sqlx::query(
                        "INSERT INTO recipients (user_id, email, name) VALUES ($1, $2, $3) \
                         ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, name = excluded.name",
                    )
                    .bind(id)
                    .bind(&user.email)
                    .bind(&user.name)
                    .execute(&mut *connection)
                    .await?;
                    (user.user_id.clone(), None, templates::welcome(&user.name))
                }
                Notifiable::Confirmed(order) => {
                    let rendered = templates::order_confirmed(&order.order_id, &order.lines, order.total.as_ref());
                    (order.user_id.clone(), Some(order.order_id.clone()), rendered)
                }
                Notifiable::Cancelled(order) => {
                    let rendered =
                        templates::order_cancelled(&order.order_id, &order.reason, order.refund, order.total.as_ref());
                    (order.user_id.clone(), Some(order.order_id.clone()), rendered)
                }
                Notifiable::Refunded(refund) => {
                    let rendered = templates::payment_refunded(&refund.order_id, refund.amount.as_ref());
                    (refund.user_id.clone(), Some(refund.order_id.clone()), rendered)
                }
            };
            let user = Uuid::parse_str(&user)?;
            let order = order.map(|order| Uuid::parse_str(&order)).transpose()?;
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
                .await?
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
        .await?;
        sqlx::query("SELECT pg_notify('shop_notifications', '')").execute(connection).await?;
        Ok(())
    }
}
