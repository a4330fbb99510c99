//! What each event becomes: one notification, stored in the consumer's transaction.

use futures::future::BoxFuture;
use shop_kit::events::{HandleError, Handler, Received};
use shop_proto::shop::events::v1::{
    OrderCancelled, OrderConfirmed, OrderDelivered, OrderPlaced, OrderShipped, PaymentFailed, PaymentRefunded,
    PaymentSucceeded, UserRegistered,
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{Channel, NewNotification},
    store,
    templates::{self, Rendered},
};

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
        Shipped(OrderShipped),
        Refunded(PaymentRefunded),
    }
    ignoring [OrderPlaced, OrderDelivered, PaymentSucceeded, PaymentFailed]
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
                    store::save_recipient(connection, id, &user.email, &user.name)
                        .await
                        .map_err(HandleError::retryable)?;
                    (user.user_id.clone(), None, templates::welcome(&user.name).map_err(HandleError::permanent)?)
                }
                Notifiable::Confirmed(order) => {
                    let rendered = templates::order_confirmed(&order.order_id, &order.lines, order.total.as_ref())
                        .map_err(HandleError::permanent)?;
                    (order.user_id.clone(), Some(order.order_id.clone()), rendered)
                }
                Notifiable::Cancelled(order) => {
                    let rendered =
                        templates::order_cancelled(&order.order_id, &order.reason, order.refund, order.total.as_ref())
                            .map_err(HandleError::permanent)?;
                    (order.user_id.clone(), Some(order.order_id.clone()), rendered)
                }
                Notifiable::Shipped(order) => {
                    let rendered = templates::order_shipped(&order.order_id, &order.carrier, &order.tracking_number)
                        .map_err(HandleError::permanent)?;
                    (order.user_id.clone(), Some(order.order_id.clone()), rendered)
                }
                Notifiable::Refunded(refund) => {
                    let rendered = templates::payment_refunded(&refund.order_id, refund.amount.as_ref())
                        .map_err(HandleError::permanent)?;
                    (refund.user_id.clone(), Some(refund.order_id.clone()), rendered)
                }
            };
            let user = Uuid::parse_str(&user)?;
            let order = order.map(|order| Uuid::parse_str(&order)).transpose()?;
            self.save(connection, event.ce_id, user, order, &rendered).await
        })
    }
}

impl Events {
    async fn save(
        &self,
        connection: &mut PgConnection,
        event_id: Uuid,
        user_id: Uuid,
        order_id: Option<Uuid>,
        rendered: &Rendered,
    ) -> Result<(), HandleError> {
        let recipient = if self.email_enabled {
            store::recipient_email(connection, user_id).await.map_err(HandleError::retryable)?
        } else {
            None
        };
        let notification = NewNotification {
            id: Uuid::now_v7(),
            event_id,
            user_id,
            order_id,
            channel: Channel::for_recipient(recipient.as_deref()),
            recipient,
            template: rendered.template.to_owned(),
            subject: rendered.subject.clone(),
            body: rendered.body.clone(),
            html_body: rendered.html.clone(),
        };
        store::insert(connection, &notification).await.map_err(HandleError::retryable)?;
        Ok(())
    }
}
