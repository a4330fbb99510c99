//! The event contracts: every event message, the topic it travels on, and the service that
//! owns (alone writes) that topic.
//!
//! An event's CloudEvents type is `<topic>.<message name>` (`shop.order.v1.OrderPlaced`):
//! the topic from [`EventContract::TOPIC`], the name from [`prost::Name`], generated from the
//! `.proto` file. A producer hands over a message and a consumer names message types, so a
//! misspelt type cannot compile. Topic names carry no environment prefix here; the runtime
//! adds it (`KAFKA_TOPIC_PREFIX`).

use crate::shop::events::v1::{
    NotificationDelivered, OrderCancelled, OrderConfirmed, OrderDelivered, OrderPlaced, OrderShipped, PaymentFailed,
    PaymentRefunded, PaymentSucceeded, ProductChanged, StockChanged, UserRegistered,
};

/// A topic (one per aggregate, key = aggregate id) and its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Topic {
    /// The topic's name without any environment prefix: `shop.order.v1`.
    pub name: &'static str,
    /// The CloudEvents `ce_source` of the one service that writes it: `/shop/order`.
    pub source: &'static str,
}

/// `shop.user.v1`, written by user-service.
pub const USER: Topic = Topic { name: "shop.user.v1", source: "/shop/user" };
/// `shop.product.v1`, written by product-service.
pub const PRODUCT: Topic = Topic { name: "shop.product.v1", source: "/shop/product" };
/// `shop.order.v1`, written by order-service.
pub const ORDER: Topic = Topic { name: "shop.order.v1", source: "/shop/order" };
/// `shop.payment.v1`, written by payment-service.
pub const PAYMENT: Topic = Topic { name: "shop.payment.v1", source: "/shop/payment" };
/// `shop.notification.v1`, written by notification-service.
pub const NOTIFICATION: Topic = Topic { name: "shop.notification.v1", source: "/shop/notification" };

/// Every topic, in the order of the table in the architecture guide.
pub const TOPICS: [Topic; 5] = [USER, PRODUCT, ORDER, PAYMENT, NOTIFICATION];

/// An event message and where it travels.
pub trait EventContract: prost::Message + prost::Name + Default + Send + Sync + 'static {
    /// The topic it is published on.
    const TOPIC: Topic;

    /// The CloudEvents type: `<topic>.<message name>`.
    fn ce_type() -> String {
        format!("{}.{}", Self::TOPIC.name, Self::NAME)
    }

    /// Whether `ce_type` is this message's type (no allocation).
    fn is_type(ce_type: &str) -> bool {
        ce_type.strip_prefix(Self::TOPIC.name).and_then(|rest| rest.strip_prefix('.')) == Some(Self::NAME)
    }
}

macro_rules! contracts {
    ($($topic:ident => [$($message:ty),+ $(,)?]),+ $(,)?) => {
        $($(impl EventContract for $message {
            const TOPIC: Topic = $topic;
        })+)+

        /// Every event type of every topic: (topic, message name).
        pub const EVENT_TYPES: &[(Topic, &str)] = &[
            $($(($topic, <$message as prost::Name>::NAME)),+),+
        ];
    };
}

contracts! {
    USER => [UserRegistered],
    PRODUCT => [ProductChanged, StockChanged],
    ORDER => [OrderPlaced, OrderConfirmed, OrderCancelled, OrderShipped, OrderDelivered],
    PAYMENT => [PaymentSucceeded, PaymentFailed, PaymentRefunded],
    NOTIFICATION => [NotificationDelivered],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_the_topic_and_the_message_name() {
        assert_eq!(OrderPlaced::ce_type(), "shop.order.v1.OrderPlaced");
        assert_eq!(UserRegistered::ce_type(), "shop.user.v1.UserRegistered");
        assert!(PaymentSucceeded::is_type("shop.payment.v1.PaymentSucceeded"));
        for other in
            ["shop.payment.v1.PaymentFailed", "shop.order.v1.PaymentSucceeded", "shop.payment.v1PaymentSucceeded", ""]
        {
            assert!(!PaymentSucceeded::is_type(other), "{other:?} is not PaymentSucceeded");
        }
    }

    #[test]
    fn every_topic_has_one_owner_and_every_type_one_topic() {
        let mut names: Vec<&str> = TOPICS.iter().map(|topic| topic.name).collect();
        names.dedup();
        assert_eq!(names.len(), TOPICS.len());
        for (topic, name) in EVENT_TYPES {
            assert!(TOPICS.contains(topic), "{name} travels on an unlisted topic");
            let twice = EVENT_TYPES.iter().filter(|(_, other)| other == name).count();
            assert_eq!(twice, 1, "{name} is declared on {twice} topics");
        }
    }
}
