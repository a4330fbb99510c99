//! SIGTERM the payment service (the real binary) while the broker is unreachable, after it
//! applied a round of OrderPlaced events: it exits 0 within its deadline. Restarted with the
//! broker back, it applies nothing twice and carries on with new events.

use std::{collections::HashSet, time::Duration};

use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use shop_kit::events::{KafkaConfig, ensure_topics};
use shop_proto::shop::{common::v1::Money, events::v1::OrderPlaced};
use shop_testkit::{ServiceProcess, TcpProxy, TestBroker, TestDb, eventually, http_client, through};
use uuid::Uuid;

/// The service's `SHUTDOWN_TIMEOUT` in these tests.
const DEADLINE: Duration = Duration::from_secs(10);

fn start(db: &TestDb, broker: &TestBroker, prefix: &str) -> ServiceProcess {
    start_with(db.url(), broker, prefix)
}

fn start_with(database_url: &str, broker: &TestBroker, prefix: &str) -> ServiceProcess {
    ServiceProcess::start(
        env!("CARGO_BIN_EXE_payment-service"),
        &[
            ("DATABASE_URL", database_url.to_owned()),
            ("KAFKA_BROKERS", broker.address()),
            ("KAFKA_TOPIC_PREFIX", prefix.to_owned()),
            ("KAFKA_CREATE_TOPICS", "true".to_owned()),
            ("SHUTDOWN_TIMEOUT", format!("{}s", DEADLINE.as_secs())),
            ("SHUTDOWN_GRACE", "2s".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ],
    )
}

async fn place(producer: &FutureProducer, topic: &str, count: usize) -> HashSet<String> {
    let mut orders = HashSet::new();
    for index in 0..count {
        let order_id = Uuid::now_v7().to_string();
        orders.insert(order_id.clone());
        let placed = OrderPlaced {
            order_id: order_id.clone(),
            user_id: Uuid::now_v7().to_string(),
            lines: vec![],
            total: Some(Money { amount: 1000 + index as i64, currency: "USD".into() }),
            card_token: "tok_visa".into(),
        };
        let id = Uuid::now_v7().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "ce_id", value: Some(id.as_str()) })
            .insert(Header { key: "ce_type", value: Some("shop.order.v1.OrderPlaced") })
            .insert(Header { key: "ce_source", value: Some("/shop/order") });
        let payload = prost::Message::encode_to_vec(&placed);
        let record = FutureRecord::to(topic).key(&order_id).payload(&payload).headers(headers);
        producer.send(record, Duration::from_secs(10)).await.unwrap();
    }
    orders
}

/// Stops the service with SIGTERM and checks it exits 0 within the deadline.
async fn stop_within_deadline(service: &mut ServiceProcess, what: &str) -> Duration {
    let exited = service.terminate(DEADLINE + Duration::from_secs(5)).await;
    let log = service.log();
    let Some((status, took)) = exited else { panic!("{what}: no exit within {DEADLINE:?}; log:\n{log}") };
    assert!(status.success(), "{what}: exit status {status}; log:\n{log}");
    assert!(took < DEADLINE, "{what}: took {took:?}, over the {DEADLINE:?} deadline; log:\n{log}");
    assert!(log.contains("stopped"), "{what}: no stopped line; log:\n{log}");
    for line in log.lines().filter(|line| line.contains("stopp")) {
        eprintln!("{what}: {line}");
    }
    took
}

#[tokio::test]
async fn sigterm_with_the_broker_unreachable_exits_in_time_and_applies_nothing_twice() {
    shop_testkit::init_tracing();
    let db = TestDb::new().await;
    let broker = TestBroker::start().await;
    let prefix = format!("t{}.", Uuid::now_v7().simple());
    let kafka = KafkaConfig::for_brokers(&broker.address());
    let orders_topic = format!("{prefix}shop.order.v1");
    ensure_topics(&kafka, &[&orders_topic, &format!("{prefix}shop.payment.v1")], 3).await.unwrap();
    let producer = kafka.producer().unwrap();
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let count = |table: &'static str| {
        let pool = pool.clone();
        async move {
            // Before the service has migrated, the table does not exist yet: count nothing.
            sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table}")).fetch_one(&pool).await.unwrap_or(0)
        }
    };

    let began = std::time::Instant::now();
    let first_round = 12;
    let mut orders = place(&producer, &orders_topic, first_round).await;
    let mut service = start(&db, &broker, &prefix);
    eventually("the first round paid and its events published", Duration::from_secs(25), || async {
        let published: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
        (count("payments").await == first_round as i64 && published == first_round as i64).then_some(())
    })
    .await;

    eprintln!("{:?}: first round applied and published", began.elapsed());
    broker.cut();
    // The service has seen the outage: its readiness check of the broker fails, and it
    // stays ready (degraded): a broker outage takes no pod out of its Service.
    eventually("readiness reports the broker down", Duration::from_secs(10), || async {
        let response = http_client().get(service.url("/readyz")).send().await.ok()?;
        assert_eq!(response.status(), 200, "a broker outage leaves the service ready");
        let body: serde_json::Value = response.json().await.ok()?;
        (body["status"] == "degraded" && body["checks"]["kafka"]["status"] == "failing").then_some(())
    })
    .await;
    let took = stop_within_deadline(&mut service, "broker unreachable").await;
    eprintln!("payment-service stopped in {took:?} with the broker unreachable");

    broker.restore();
    let mut service = start(&db, &broker, &prefix);
    let second_round = 4;
    orders.extend(place(&producer, &orders_topic, second_round).await);
    let total = (first_round + second_round) as i64;
    eprintln!("{:?}: restarted", began.elapsed());
    // Charged: a payment is recorded `pending` first, and its outcome and outcome event
    // commit together once the worker has charged it.
    eventually("the second round paid", Duration::from_secs(25), || async {
        let decided: i64 = sqlx::query_scalar("SELECT count(*) FROM payments WHERE status <> 'pending'")
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
        (decided == total).then_some(())
    })
    .await;
    eprintln!("{:?}: second round applied", began.elapsed());

    // Nothing the first process applied was applied again: one payment, one inbox entry and
    // one outcome event per order.
    let per_order: Vec<(String, i64)> =
        sqlx::query_as("SELECT order_id::text, count(*) FROM payments GROUP BY order_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(per_order.len(), orders.len(), "none lost");
    assert!(per_order.iter().all(|(id, count)| *count == 1 && orders.contains(id)), "none applied twice");
    assert_eq!(count("inbox").await, total, "each event recorded once");
    assert_eq!(count("outbox").await, total, "one outcome event written per order");

    // Every outcome event is published, once per order (a redelivered event would have
    // written a second one).
    eventually("every outcome event published", Duration::from_secs(15), || async {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetch_one(&pool).await.ok()?;
        (pending == 0).then_some(())
    })
    .await;
    let keys: Vec<(String, i64)> =
        sqlx::query_as("SELECT key, count(*) FROM outbox GROUP BY key").fetch_all(&pool).await.unwrap();
    assert_eq!(keys.len(), orders.len());
    assert!(keys.iter().all(|(key, count)| *count == 1 && orders.contains(key)), "one outcome event per order");

    // With everything up, the stop is quick.
    let took = stop_within_deadline(&mut service, "everything up").await;
    eprintln!("payment-service stopped in {took:?} with everything up");
}

#[tokio::test]
async fn sigterm_with_postgres_unreachable_and_an_event_in_hand_exits_in_time_and_applies_it_once() {
    shop_testkit::init_tracing();
    let db = TestDb::new().await;
    let broker = TestBroker::start().await;
    let prefix = format!("t{}.", Uuid::now_v7().simple());
    let kafka = KafkaConfig::for_brokers(&broker.address());
    let orders_topic = format!("{prefix}shop.order.v1");
    ensure_topics(&kafka, &[&orders_topic, &format!("{prefix}shop.payment.v1")], 3).await.unwrap();
    let producer = kafka.producer().unwrap();
    let (target, _) = through(db.url(), "127.0.0.1:1".parse().unwrap(), 5432);
    let proxy = TcpProxy::start(&target).await;
    let (_, proxied) = through(db.url(), proxy.address(), 5432);
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let payments =
        || async { sqlx::query_scalar::<_, i64>("SELECT count(*) FROM payments").fetch_one(&pool).await.unwrap_or(0) };

    let mut orders = place(&producer, &orders_topic, 3).await;
    let mut service = start_with(&proxied, &broker, &prefix);
    eventually("the first orders paid", Duration::from_secs(25), || async { (payments().await == 3).then_some(()) })
        .await;

    // Postgres goes away, then an event arrives: the consumer holds it, retrying.
    proxy.cut();
    orders.extend(place(&producer, &orders_topic, 1).await);
    eventually("the consumer retrying the event", Duration::from_secs(15), || async {
        service.log().contains("cannot reach the database; retrying the event").then_some(())
    })
    .await;
    let took = stop_within_deadline(&mut service, "postgres unreachable, an event in hand").await;
    eprintln!("payment-service stopped in {took:?} with Postgres unreachable and an event in hand");

    proxy.restore();
    let mut service = start_with(&proxied, &broker, &prefix);
    eventually("the held event applied after the restart", Duration::from_secs(25), || async {
        (payments().await == 4).then_some(())
    })
    .await;
    let per_order: Vec<(String, i64)> =
        sqlx::query_as("SELECT order_id::text, count(*) FROM payments GROUP BY order_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(per_order.iter().all(|(id, count)| *count == 1 && orders.contains(id)), "none applied twice");
    assert_eq!(per_order.len(), orders.len(), "none lost");
    stop_within_deadline(&mut service, "everything up").await;
}
