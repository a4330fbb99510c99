//! SIGKILL the payment service (the real binary, a child process) in the middle of 40
//! OrderPlaced events (some consumed, some charged, some being charged), start it again, and
//! check: every order gets exactly one payment, and each order's outcome is published once
//! (one distinct event id per order).

use std::{
    collections::{HashMap, HashSet},
    process::{Child, Command, Stdio},
    time::Duration,
};

use rdkafka::{
    Message as _,
    consumer::Consumer as _,
    message::{Header, Headers as _, OwnedHeaders},
    producer::FutureRecord,
};
use shop_kit::events::{KafkaConfig, ensure_topics};
use shop_proto::shop::{
    common::v1::Money,
    events::v1::{OrderPlaced, PaymentFailed, PaymentSucceeded},
};
use shop_testkit::{TestDb, eventually};
use uuid::Uuid;

fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The payment-service child; killed (SIGKILL) and reaped when dropped, so a failing test
/// leaves no process behind.
struct Service(Child);

impl Service {
    fn sigkill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.sigkill();
    }
}

fn start(db: &TestDb, prefix: &str) -> Service {
    let child = Command::new(env!("CARGO_BIN_EXE_payment-service"))
        .env_clear()
        .env("DATABASE_URL", db.url())
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("KAFKA_BROKERS", brokers())
        .env("KAFKA_TOPIC_PREFIX", prefix)
        .env("KAFKA_CREATE_TOPICS", "true")
        // Small batches commit one after another, so the kill lands between two commits with
        // the next batch in flight. With the default (100) a fetch that brings all 40 events
        // at once applies them in one transaction, and the count jumps from 0 to 40.
        .env("KAFKA_CONSUMER_BATCH", "4")
        // A short lease (18 s), so payments the killed worker had claimed are taken over soon.
        .env("PAYMENT_PROVIDER_TIMEOUT", "2s")
        .env("DATABASE_ACQUIRE_TIMEOUT", "1s")
        .env("DATABASE_STATEMENT_TIMEOUT", "2s")
        .env("PAYMENT_DECLINE_AFTER", "1s")
        // Charges take a while, four at a time, so the kill lands with some decided, some
        // being charged and some still pending.
        .env("TEST_PROVIDER_LATENCY", "200ms")
        .env("PAYMENT_WORKER_CONCURRENCY", "4")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Service(child)
}

// The restarted service may join while the killed one is still a member; tansu 0.6 can then
// form the group with no partition assigned. The consumer runner's watchdog rejoins, so this
// test also proves that the platform recovers from that (within its 120 s deadline).
#[tokio::test]
async fn a_payment_service_sigkilled_mid_batch_pays_every_order_exactly_once() {
    shop_testkit::init_tracing();
    let db = TestDb::new().await;
    let prefix = format!("t{}.", Uuid::now_v7().simple());
    let kafka = KafkaConfig::for_brokers(&brokers());
    let (orders_topic, payments_topic) = (format!("{prefix}shop.order.v1"), format!("{prefix}shop.payment.v1"));
    ensure_topics(&kafka, &[&orders_topic, &payments_topic], 3).await.unwrap();

    let producer = kafka.producer().unwrap();
    let total = 40;
    let mut orders = HashSet::new();
    for index in 0..total {
        let order_id = Uuid::now_v7().to_string();
        orders.insert(order_id.clone());
        let card = if index % 4 == 0 { "tok_processingError" } else { "tok_visa" };
        let placed = OrderPlaced {
            order_id: order_id.clone(),
            user_id: Uuid::now_v7().to_string(),
            lines: vec![],
            total: Some(Money { amount: 1000 + index, currency: "USD".into() }),
            card_token: card.into(),
        };
        let id = Uuid::now_v7().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "ce_id", value: Some(id.as_str()) })
            .insert(Header { key: "ce_type", value: Some("shop.order.v1.OrderPlaced") })
            .insert(Header { key: "ce_source", value: Some("/shop/order") });
        let payload = prost::Message::encode_to_vec(&placed);
        let record = FutureRecord::to(&orders_topic).key(&order_id).payload(&payload).headers(headers);
        producer.send(record, Duration::from_secs(10)).await.unwrap();
    }

    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let count = || async {
        // Payments with an outcome. Before the service has migrated, the table does not
        // exist yet: count nothing.
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM payments WHERE status <> 'pending'")
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
    };
    let mut first = start(&db, &prefix);
    eventually("some payments", Duration::from_secs(60), || async { (count().await >= 5).then_some(()) }).await;
    first.sigkill();
    let at_kill = count().await;
    assert!(at_kill < total, "the kill must land mid-batch ({at_kill} of {total})");

    let mut second = start(&db, &prefix);
    eventually("every order paid", Duration::from_secs(120), || async { (count().await == total).then_some(()) }).await;
    let per_order: Vec<(String, i64)> =
        sqlx::query_as("SELECT order_id::text, count(*) FROM payments GROUP BY order_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(per_order.len(), orders.len(), "none lost");
    assert!(per_order.iter().all(|(id, count)| *count == 1 && orders.contains(id)), "none applied twice");

    // Each order's outcome is published under one event id (redeliveries keep the id).
    let reader = kafka.consumer(&format!("reader-{}", Uuid::now_v7())).unwrap();
    reader.subscribe(&[payments_topic.as_str()]).unwrap();
    let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
    while ids.len() < orders.len() {
        let message =
            tokio::time::timeout(Duration::from_secs(60), reader.recv()).await.expect("payment events").unwrap();
        let headers = message.headers().unwrap();
        let header = |key: &str| {
            headers.iter().find(|h| h.key == key).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let order_id = match header("ce_type").as_deref() {
            Some("shop.payment.v1.PaymentSucceeded") => {
                let paid: PaymentSucceeded = prost::Message::decode(message.payload().unwrap()).unwrap();
                paid.order_id
            }
            Some("shop.payment.v1.PaymentFailed") => {
                let failed: PaymentFailed = prost::Message::decode(message.payload().unwrap()).unwrap();
                assert_eq!(failed.reason, "processing_error");
                failed.order_id
            }
            other => panic!("unexpected event {other:?}"),
        };
        ids.entry(order_id).or_default().insert(header("ce_id").unwrap());
    }
    assert!(ids.values().all(|set| set.len() == 1), "one outcome event per order");
    second.sigkill();
}
