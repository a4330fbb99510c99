//! Payment events, published to the topic as the payment service would, move orders on.

use shop_proto::shop::events::v1::{PaymentFailed, PaymentSucceeded};

use crate::helpers::spawn_app;

#[tokio::test]
async fn payment_events_confirm_or_cancel_pending_orders() {
    let app = spawn_app().await;
    let lamp = app.catalog.add("Lamp", 2999, "USD", 10);
    let (paid_buyer, paid) = app.placed(&lamp, 1).await;
    let (declined_buyer, declined) = app.placed(&lamp, 2).await;
    let (paid_id, declined_id) = (paid["id"].as_str().unwrap(), declined["id"].as_str().unwrap());

    let succeeded = PaymentSucceeded { order_id: paid_id.to_owned(), ..Default::default() };
    app.publish_payment("PaymentSucceeded", paid_id, prost::Message::encode_to_vec(&succeeded)).await;
    let failed =
        PaymentFailed { order_id: declined_id.to_owned(), reason: "card_declined".into(), ..Default::default() };
    app.publish_payment("PaymentFailed", declined_id, prost::Message::encode_to_vec(&failed)).await;

    let confirmed = app.order_becomes(&paid_buyer, paid_id, "confirmed").await;
    assert_eq!(confirmed["failure_reason"], serde_json::Value::Null, "a paid order has no failure");
    let cancelled = app.order_becomes(&declined_buyer, declined_id, "cancelled").await;
    assert_eq!(cancelled["failure_reason"], "card_declined", "the payment's reason is the order's");
}
