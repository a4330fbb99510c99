//! What the payment service does with order events, on its own: each placed order is
//! charged once (declines and transient failures included), a paid order cancelled with a
//! refund is refunded once, and everything else changes nothing. Events are published to
//! the topic as the order service would; the outcomes are read from the outbox.

use std::time::Duration;

use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::FutureRecord,
};
use shop_kit::events::KafkaConfig;
use shop_proto::shop::{
    common::v1::Money,
    events::v1::{OrderCancelled, OrderPlaced, OrderShipped, PaymentFailed},
};
use shop_testkit::{eventually, http_client};
use uuid::Uuid;

use crate::reads::spawn;

pub(crate) fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Publishes an order event as the order service would, through one producer per test
/// process (a producer per event would cost a connection and a metadata fetch each).
pub(crate) async fn publish(prefix: &str, name: &str, order: Uuid, message: &impl prost::Message) {
    publish_traced(prefix, name, order, message, None).await;
}

/// [`publish`], with a W3C `traceparent` header when given one.
pub(crate) async fn publish_traced(
    prefix: &str,
    name: &str,
    order: Uuid,
    message: &impl prost::Message,
    traceparent: Option<&str>,
) {
    publish_as(prefix, "/shop/order", (name, order), message, traceparent).await;
}

/// An order event as `source` says it is (`ce_source`): the order service's own is
/// `/shop/order`.
async fn publish_as(
    prefix: &str,
    source: &str,
    (name, order): (&str, Uuid),
    message: &impl prost::Message,
    traceparent: Option<&str>,
) {
    static PRODUCER: std::sync::OnceLock<rdkafka::producer::FutureProducer> = std::sync::OnceLock::new();
    let producer = PRODUCER.get_or_init(|| KafkaConfig::for_brokers(&brokers()).producer().unwrap());
    let (id, ce_type) = (Uuid::now_v7().to_string(), format!("shop.order.v1.{name}"));
    let mut headers = OwnedHeaders::new()
        .insert(Header { key: "ce_id", value: Some(id.as_str()) })
        .insert(Header { key: "ce_type", value: Some(ce_type.as_str()) })
        .insert(Header { key: "ce_source", value: Some(source) });
    if let Some(traceparent) = traceparent {
        headers = headers.insert(Header { key: "traceparent", value: Some(traceparent) });
    }
    let (topic, key, payload) = (format!("{prefix}shop.order.v1"), order.to_string(), message.encode_to_vec());
    let record = FutureRecord::to(&topic).key(&key).payload(&payload).headers(headers);
    producer.send(record, Duration::from_secs(10)).await.unwrap();
}

pub(crate) fn placed(order: Uuid, card: &str, amount: i64) -> OrderPlaced {
    OrderPlaced {
        order_id: order.to_string(),
        user_id: Uuid::now_v7().to_string(),
        lines: vec![],
        total: Some(Money { amount, currency: "EUR".into() }),
        card_token: card.into(),
    }
}

pub(crate) fn cancelled(order: Uuid, refund: bool) -> OrderCancelled {
    OrderCancelled { order_id: order.to_string(), refund, reason: "cancelled by request".into(), ..Default::default() }
}

#[tokio::test]
async fn every_order_is_charged_once_and_a_paid_cancelled_order_refunded_once() {
    let app = spawn().await;
    let pool = sqlx::PgPool::connect(app.db.url()).await.unwrap();
    let cards = ["tok_visa", "tok_chargeDeclined", "tok_insufficientFunds", "tok_processingError"];
    let orders: Vec<Uuid> = cards.iter().map(|_| Uuid::now_v7()).collect();
    for (order, card) in orders.iter().zip(cards) {
        publish(&app.prefix, "OrderPlaced", *order, &placed(*order, card, 1250)).await;
    }
    // Redelivered as a new event (another ce_id): still one payment.
    publish(&app.prefix, "OrderPlaced", orders[0], &placed(orders[0], "tok_visa", 1250)).await;
    // Unusable: no total. Dead-lettered, not retried forever, and nothing is charged.
    let broken = Uuid::now_v7();
    publish(&app.prefix, "OrderPlaced", broken, &OrderPlaced { total: None, ..placed(broken, "tok_visa", 1) }).await;
    // Other order events change nothing here.
    publish(
        &app.prefix,
        "OrderShipped",
        orders[0],
        &OrderShipped { order_id: orders[0].to_string(), ..Default::default() },
    )
    .await;

    let payments = || async {
        let mut rows: Vec<(Uuid, String, Option<String>, i32, i64)> =
            sqlx::query_as("SELECT order_id, status, failure_reason, attempts, amount FROM payments ORDER BY order_id")
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
        rows.sort_by_key(|row| orders.iter().position(|order| *order == row.0));
        rows
    };
    let taken = eventually("four payments decided", Duration::from_secs(60), || async {
        let rows = payments().await;
        (rows.len() == 4 && rows.iter().all(|row| row.1 != "pending")).then_some(rows)
    })
    .await;
    let outcomes: Vec<(&str, Option<&str>, i32)> =
        taken.iter().map(|row| (row.1.as_str(), row.2.as_deref(), row.3)).collect();
    assert_eq!(
        outcomes,
        [
            ("succeeded", None, 1),
            ("failed", Some("card_declined"), 1),
            ("failed", Some("insufficient_funds"), 1),
            ("failed", Some("processing_error"), 4),
        ],
        "a transient failure is retried (PAYMENT_CHARGE_ATTEMPTS = 3), then looked up once more \
         (PAYMENT_DECLINE_AFTER later) and declined"
    );
    assert!(taken.iter().all(|row| row.4 == 1250));

    // One outcome event per order, of the right type.
    let outbox = || async {
        sqlx::query_as::<_, (String, String, Vec<u8>)>("SELECT key, ce_type, payload FROM outbox ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    let events = outbox().await;
    let mut types: Vec<(String, String)> =
        events.iter().map(|(key, ce_type, _)| (key.clone(), ce_type.clone())).collect();
    let mut expected: Vec<(String, String)> = orders
        .iter()
        .zip(["PaymentSucceeded", "PaymentFailed", "PaymentFailed", "PaymentFailed"])
        .map(|(order, name)| (order.to_string(), format!("shop.payment.v1.{name}")))
        .collect();
    types.sort();
    expected.sort();
    assert_eq!(types, expected, "one outcome per order");
    let declined = events.iter().find(|(key, _, _)| *key == orders[1].to_string()).unwrap();
    let declined: PaymentFailed = prost::Message::decode(declined.2.as_slice()).unwrap();
    assert_eq!((declined.reason.as_str(), declined.amount.unwrap().amount), ("card_declined", 1250));

    // Cancellations: without refund, or of an unpaid order, nothing; with refund, once.
    publish(&app.prefix, "OrderCancelled", orders[1], &cancelled(orders[1], true)).await;
    publish(&app.prefix, "OrderCancelled", orders[0], &cancelled(orders[0], false)).await;
    publish(&app.prefix, "OrderCancelled", orders[0], &cancelled(orders[0], true)).await;
    publish(&app.prefix, "OrderCancelled", orders[0], &cancelled(orders[0], true)).await;
    eventually("the refund", Duration::from_secs(30), || async { (payments().await[0].1 == "refunded").then_some(()) })
        .await;
    // Markers after the cancellations on their partitions (same keys): once they are applied,
    // so are the cancellations.
    let marker = Uuid::now_v7();
    for order in [orders[0], orders[1]] {
        publish(
            &app.prefix,
            "OrderShipped",
            order,
            &OrderShipped { order_id: marker.to_string(), ..Default::default() },
        )
        .await;
    }
    eventually("every cancellation consumed", Duration::from_secs(30), || async {
        let metrics = http_client().get(app.server.url("/metrics")).send().await.ok()?.text().await.ok()?;
        let ignored = metrics
            .lines()
            .find(|line| line.starts_with("events_consumed_total") && line.contains(r#"outcome="ignored""#))?;
        (ignored.rsplit(' ').next()?.parse::<f64>().ok()? >= 3.0).then_some(())
    })
    .await;
    let refunds: Vec<String> = outbox()
        .await
        .into_iter()
        .filter(|(_, ce_type, _)| ce_type == "shop.payment.v1.PaymentRefunded")
        .map(|(key, _, _)| key)
        .collect();
    assert_eq!(refunds, [orders[0].to_string()], "refunded once, and only the paid order");
    assert_eq!(payments().await[1].1, "failed", "a declined payment is never refunded");

    let metrics = http_client().get(app.server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|line| line.starts_with("events_consumed_total")
            && line.contains(r#"outcome="dead_lettered""#)
            && line.ends_with(" 1")),
        "the order without a total is dead-lettered:\n{metrics}"
    );
    // The payment service's own metrics (provider calls, recorded payments) are described too.
    shop_testkit::assert_metrics_well_formed(&metrics);
}

/// Only the order service writes `shop.order.v1`: an `OrderCancelled{refund}` that anyone else
/// published (a forged `ce_source`) refunds nothing and goes to the dead-letter topic.
#[tokio::test]
async fn a_forged_cancellation_refunds_nothing() {
    let app = spawn().await;
    let pool = sqlx::PgPool::connect(app.db.url()).await.unwrap();
    let order = Uuid::now_v7();
    publish(&app.prefix, "OrderPlaced", order, &placed(order, "tok_visa", 990)).await;
    let status = || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM payments WHERE order_id = $1")
            .bind(order)
            .fetch_optional(&pool)
            .await
            .unwrap()
    };
    eventually("the charge", Duration::from_secs(60), || async {
        (status().await.as_deref() == Some("succeeded")).then_some(())
    })
    .await;
    publish_as(&app.prefix, "/shop/attacker", ("OrderCancelled", order), &cancelled(order, true), None).await;
    // A genuine event after it on the same partition: once it is consumed, so is the forgery.
    let shipped = OrderShipped { order_id: order.to_string(), ..Default::default() };
    publish(&app.prefix, "OrderShipped", order, &shipped).await;
    eventually("the genuine event after the forged one", Duration::from_secs(30), || async {
        let metrics = http_client().get(app.server.url("/metrics")).send().await.ok()?.text().await.ok()?;
        let ignored = metrics
            .lines()
            .find(|line| line.starts_with("events_consumed_total") && line.contains(r#"outcome="ignored""#))?;
        (ignored.rsplit(' ').next()?.parse::<f64>().ok()? >= 1.0).then_some(())
    })
    .await;
    assert_eq!(status().await.as_deref(), Some("succeeded"), "not refunded");
    let refunds: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE ce_type = 'shop.payment.v1.PaymentRefunded'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(refunds, 0);
    let metrics = http_client().get(app.server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("events_consumed_total") && line.contains(r#"outcome="dead_lettered""#)),
        "the forgery was dead-lettered"
    );
}
