//! Typed consumption: a consumer names the message types it handles (and those it knowingly
//! ignores) in an enum made by [`consumes!`](crate::consumes); each message is decoded into
//! it before anything is applied.

use shop_proto::contracts::Topic;
use uuid::Uuid;

/// The message types a consumer takes: an enum made by [`consumes!`](crate::consumes).
pub trait Consumes: Sized + Send + Sync + 'static {
    /// The topics its types (handled and ignored) travel on, without the environment's
    /// prefix, each once.
    fn topics() -> Vec<Topic>;

    /// The message of type `ce_type`, `None` for a type the consumer knowingly ignores, or why
    /// the message is refused (it then goes to the dead-letter topic).
    fn decode(ce_type: &str, payload: &[u8]) -> Result<Option<Self>, Refusal>;
}

/// Why a message cannot be given to the consumer's handler.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A type this consumer neither handles nor ignores (a newer producer, or a wrong topic).
    #[error("unhandled event type {ce_type:?}: this consumer neither handles nor ignores it")]
    Unhandled { ce_type: String },
    /// The payload is not the message its type says.
    #[error("the payload of a {ce_type} event does not decode")]
    Malformed {
        ce_type: String,
        #[source]
        error: prost::DecodeError,
    },
}

/// A consumed event, decoded.
#[derive(Clone, Debug)]
pub struct Received<E> {
    /// The CloudEvents id, the inbox's deduplication key.
    pub ce_id: Uuid,
    /// The CloudEvents type, `shop.order.v1.OrderPlaced`.
    pub ce_type: String,
    /// The full topic name it came from.
    pub topic: String,
    /// The aggregate id.
    pub key: String,
    /// The message.
    pub message: E,
}

/// Declares the message types a consumer handles as an enum that implements [`Consumes`],
/// and the types on the same topics it knowingly ignores:
///
/// ```ignore
/// shop_kit::consumes! {
///     /// The payment events order-service applies.
///     pub enum PaymentEvent {
///         Succeeded(PaymentSucceeded),
///         Failed(PaymentFailed),
///     }
///     ignoring [PaymentRefunded]
/// }
/// ```
///
/// Every type must implement [`shop_proto::contracts::EventContract`]; the consumer then
/// reads exactly the topics those contracts name.
#[macro_export]
macro_rules! consumes {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident($message:ty)),+ $(,)?
        }
        $(ignoring [$($ignored:ty),* $(,)?])?
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug)]
        $vis enum $name {
            $($(#[$variant_meta])* $variant($message)),+
        }

        impl $crate::events::Consumes for $name {
            fn topics() -> ::std::vec::Vec<$crate::events::Topic> {
                let mut topics: ::std::vec::Vec<$crate::events::Topic> = ::std::vec::Vec::new();
                for topic in [
                    $(<$message as $crate::events::EventContract>::TOPIC,)+
                    $($(<$ignored as $crate::events::EventContract>::TOPIC,)*)?
                ] {
                    if !topics.contains(&topic) {
                        topics.push(topic);
                    }
                }
                topics
            }

            fn decode(
                ce_type: &str,
                payload: &[u8],
            ) -> ::std::result::Result<::std::option::Option<Self>, $crate::events::Refusal> {
                $(
                    if <$message as $crate::events::EventContract>::is_type(ce_type) {
                        return <$message as $crate::__prost::Message>::decode(payload)
                            .map(|message| ::std::option::Option::Some(Self::$variant(message)))
                            .map_err(|error| $crate::events::Refusal::Malformed { ce_type: ce_type.to_owned(), error });
                    }
                )+
                $($(
                    if <$ignored as $crate::events::EventContract>::is_type(ce_type) {
                        return ::std::result::Result::Ok(::std::option::Option::None);
                    }
                )*)?
                ::std::result::Result::Err($crate::events::Refusal::Unhandled { ce_type: ce_type.to_owned() })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use shop_proto::{
        contracts,
        shop::events::v1::{OrderCancelled, OrderPlaced, PaymentRefunded, PaymentSucceeded},
    };

    use super::*;

    crate::consumes! {
        /// A consumer of two order types that ignores a third; one payment type.
        enum Taken {
            Placed(OrderPlaced),
            Paid(PaymentSucceeded),
        }
        ignoring [OrderCancelled]
    }

    #[test]
    fn a_consumer_decodes_what_it_names_ignores_what_it_says_and_refuses_the_rest() {
        assert_eq!(Taken::topics(), vec![contracts::ORDER, contracts::PAYMENT]);
        let placed = OrderPlaced { order_id: "o1".into(), ..OrderPlaced::default() }.encode_to_vec();
        match Taken::decode("shop.order.v1.OrderPlaced", &placed) {
            Ok(Some(Taken::Placed(message))) => assert_eq!(message.order_id, "o1"),
            other => panic!("OrderPlaced decoded as {other:?}"),
        }
        let paid = PaymentSucceeded { order_id: "o2".into(), ..PaymentSucceeded::default() }.encode_to_vec();
        match Taken::decode("shop.payment.v1.PaymentSucceeded", &paid) {
            Ok(Some(Taken::Paid(message))) => assert_eq!(message.order_id, "o2"),
            other => panic!("PaymentSucceeded decoded as {other:?}"),
        }
        assert!(matches!(Taken::decode("shop.order.v1.OrderCancelled", &[]), Ok(None)), "ignored");
        let refund = PaymentRefunded::default().encode_to_vec();
        match Taken::decode("shop.payment.v1.PaymentRefunded", &refund) {
            Err(Refusal::Unhandled { ce_type }) => assert_eq!(ce_type, "shop.payment.v1.PaymentRefunded"),
            other => panic!("an unnamed type is refused, not {other:?}"),
        }
        match Taken::decode("shop.order.v1.OrderPlaced", &[0xff, 0xff, 0xff]) {
            Err(error @ Refusal::Malformed { .. }) => {
                let reason = format!("{:#}", anyhow::Error::from(error));
                assert!(
                    reason.starts_with("the payload of a shop.order.v1.OrderPlaced event does not decode: "),
                    "{reason}"
                );
            }
            other => panic!("garbage is refused as malformed, not {other:?}"),
        }
    }
}
