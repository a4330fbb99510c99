//! The outbox, relay and consumer runner against the real broker and Postgres. Every test
//! uses its own topics, consumer groups and database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly on purpose")]

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;
use rdkafka::{
    Message as _,
    consumer::{Consumer as _, StreamConsumer},
    message::Headers as _,
};
use shop_kit::events::{
    ConsumerRunner, Event, HandleError, Handler, Incoming, KafkaConfig, Relay, enqueue, ensure_tables, ensure_topics,
};
use shop_proto::shop::events::v1::UserRegistered;
use shop_testkit::{TestDb, eventually};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

fn kafka() -> KafkaConfig {
    KafkaConfig::for_brokers(&std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()))
}

fn unique(prefix: &str) -> String {
    format!("{prefix}.{}", uuid::Uuid::now_v7().simple())
}

async fn setup(topic: &str) -> (TestDb, sqlx::PgPool) {
    shop_testkit::init_tracing();
    let db = TestDb::new().await;
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    ensure_tables(&pool).await.unwrap();
    sqlx::query("CREATE TABLE effects (ce_id uuid NOT NULL, key text NOT NULL)").execute(&pool).await.unwrap();
    ensure_topics(&kafka(), &[topic], 3).await.unwrap();
    (db, pool)
}

fn event(topic: &str, user: &str) -> Event {
    let message = UserRegistered {
        user_id: user.into(),
        email: format!("{user}@example.com"),
        name: user.into(),
        registered_at: None,
    };
    Event::new(topic, user, "/shop/test", "UserRegistered", &message)
}

/// Reads `count` messages from `topic` with a fresh group; (key, headers, payload) each.
async fn read(topic: &str, count: usize) -> Vec<(String, HashMap<String, String>, Vec<u8>)> {
    let consumer: StreamConsumer = kafka().consumer(&unique("reader")).unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = Vec::new();
    while seen.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} messages arrived on {topic}", seen.len()))
            .unwrap();
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        seen.push((key, headers, message.payload().unwrap_or_default().to_vec()));
    }
    seen
}

#[tokio::test]
async fn committed_events_are_published_with_cloudevents_headers_and_rolled_back_ones_never() {
    let topic = unique("test.outbox");
    let (_db, pool) = setup(&topic).await;

    let mut committed = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO effects VALUES (gen_random_uuid(), 'ada')").execute(&mut *committed).await.unwrap();
    let first = event(&topic, "ada");
    let second = event(&topic, "ada");
    enqueue(&mut committed, &first).await.unwrap();
    enqueue(&mut committed, &second).await.unwrap();
    committed.commit().await.unwrap();
    let mut rolled_back = pool.begin().await.unwrap();
    enqueue(&mut rolled_back, &event(&topic, "ghost")).await.unwrap();
    rolled_back.rollback().await.unwrap();

    let relay = Relay::new(pool.clone(), kafka().producer().unwrap());
    assert_eq!(relay.publish_pending().await.unwrap(), 2);
    assert_eq!(relay.publish_pending().await.unwrap(), 0, "published rows are not sent again");

    let messages = read(&topic, 2).await;
    let ids: Vec<&str> = messages.iter().map(|(_, headers, _)| headers["ce_id"].as_str()).collect();
    assert_eq!(ids, [first.id.to_string(), second.id.to_string()], "one key's events keep their order");
    let (key, headers, payload) = &messages[0];
    assert_eq!(key, "ada");
    assert_eq!(headers["ce_specversion"], "1.0");
    assert_eq!(headers["ce_type"], format!("{topic}.UserRegistered"), "no shop. prefix in this test topic");
    assert_eq!(headers["ce_source"], "/shop/test");
    assert_eq!(headers["content-type"], "application/protobuf");
    assert!(headers.contains_key("ce_time"));
    let decoded: UserRegistered = prost::Message::decode(payload.as_slice()).unwrap();
    assert_eq!(decoded.email, "ada@example.com");
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetch_one(&pool).await.unwrap();
    assert_eq!(pending, 0, "the rolled-back event never reached the outbox");
}

#[tokio::test]
async fn the_relay_wakes_on_notify_and_replicas_publish_each_event_once() {
    let topic = unique("test.relay");
    let (_db, pool) = setup(&topic).await;
    let shutdown = CancellationToken::new();
    for _ in 0..2 {
        let relay = Relay::new(pool.clone(), kafka().producer().unwrap()).poll_interval(Duration::from_secs(60));
        tokio::spawn(relay.run(shutdown.clone()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ids = Vec::new();
    for index in 0..40 {
        let mut transaction = pool.begin().await.unwrap();
        let event = event(&topic, &format!("user-{}", index % 4));
        ids.push(event.id.to_string());
        enqueue(&mut transaction, &event).await.unwrap();
        transaction.commit().await.unwrap();
    }
    // The poll interval is a minute: only NOTIFY can have woken the relays this fast.
    let messages = read(&topic, 40).await;
    let mut seen: Vec<String> = messages.iter().map(|(_, headers, _)| headers["ce_id"].clone()).collect();
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids, "each event exactly once");
    for key in 0..4 {
        let order: Vec<&String> =
            messages.iter().filter(|(k, _, _)| *k == format!("user-{key}")).map(|(_, h, _)| &h["ce_id"]).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "user-{key}'s events arrive in the order they were written (UUIDv7 order)");
    }
    shutdown.cancel();
}

struct Recorder {
    fail_first: u32,
    attempts: Arc<AtomicU32>,
}

impl Handler for Recorder {
    fn handle<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        event: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            if event.key == "poison" {
                return Err(HandleError::Permanent(anyhow::anyhow!("cannot be applied")));
            }
            let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
            sqlx::query("INSERT INTO effects VALUES ($1, $2)")
                .bind(event.ce_id)
                .bind(&event.key)
                .execute(connection)
                .await
                .map_err(|error| HandleError::Retryable(error.into()))?;
            if event.key == "flaky" && attempt <= self.fail_first {
                // The effect above is rolled back with the transaction.
                return Err(HandleError::Retryable(anyhow::anyhow!("transient failure {attempt}")));
            }
            if event.key == "broken" {
                return Err(HandleError::Retryable(anyhow::anyhow!("always fails")));
            }
            Ok(())
        })
    }
}

async fn effects(pool: &sqlx::PgPool, key: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM effects WHERE key = $1").bind(key).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn events_apply_exactly_once_with_retries_and_dead_letters() {
    let topic = unique("test.consume");
    let (_db, pool) = setup(&topic).await;
    let group = unique("group");

    let mut transaction = pool.begin().await.unwrap();
    let duplicate = event(&topic, "dup");
    for event in [
        event(&topic, "ok"),
        duplicate.clone(),
        duplicate.clone(),
        event(&topic, "flaky"),
        event(&topic, "broken"),
        event(&topic, "poison"),
        event(&topic, "after"),
    ] {
        let mut event = event;
        if event.key == "dup" {
            // The same event published twice (as after a relay crash): same ce_id, new row.
            event.id = duplicate.id;
            sqlx::query("ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_id_key")
                .execute(&mut *transaction)
                .await
                .unwrap();
        }
        enqueue(&mut transaction, &event).await.unwrap();
    }
    transaction.commit().await.unwrap();
    Relay::new(pool.clone(), kafka().producer().unwrap()).publish_pending().await.unwrap();

    shop_kit::metrics::handle();
    let attempts = Arc::new(AtomicU32::new(0));
    let runner = ConsumerRunner::new(
        &kafka(),
        &group,
        &[topic.as_str()],
        pool.clone(),
        Recorder { fail_first: 2, attempts: Arc::clone(&attempts) },
    )
    .unwrap()
    .retries(3, Duration::from_millis(20));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    eventually("every event to be handled", Duration::from_secs(60), || async {
        (effects(&pool, "after").await == 1).then_some(())
    })
    .await;
    // Keys map to partitions; each partition is in order, but "after" may finish first.
    eventually("the other partitions", Duration::from_secs(60), || async {
        (effects(&pool, "ok").await == 1 && effects(&pool, "flaky").await == 1 && effects(&pool, "dup").await == 1)
            .then_some(())
    })
    .await;
    assert_eq!(effects(&pool, "broken").await, 0, "failed effects are rolled back");
    eventually("the consumer lag gauge", Duration::from_secs(10), || async {
        let metrics = shop_kit::metrics::render();
        metrics.lines().any(|line| line.starts_with("kafka_consumer_lag{") && line.contains(&group)).then_some(())
    })
    .await;
    let metrics = shop_kit::metrics::render();
    assert!(metrics.contains("events_consumed_total{") && metrics.contains(r#"outcome="DeadLettered""#), "{metrics}");
    let dead = read(&format!("{topic}.dlq"), 2).await;
    let mut dead_keys: Vec<&str> = dead.iter().map(|(key, _, _)| key.as_str()).collect();
    dead_keys.sort_unstable();
    assert_eq!(dead_keys, ["broken", "poison"]);
    let broken = dead.iter().find(|(key, _, _)| key == "broken").unwrap();
    assert!(broken.1["dlq_error"].contains("after 3 attempts"), "{:?}", broken.1);
    assert_eq!(broken.1["dlq_consumer"], group);
    assert!(broken.1.contains_key("ce_id") && broken.1.contains_key("dlq_offset"));
    shutdown.cancel();
    task.await.unwrap();

    // A restart of the consumer resumes after the committed offsets: nothing applies twice.
    let again = ConsumerRunner::new(
        &kafka(),
        &group,
        &[topic.as_str()],
        pool.clone(),
        Recorder { fail_first: 0, attempts: Arc::new(AtomicU32::new(0)) },
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(again.run(shutdown.clone()));
    let mut late = pool.begin().await.unwrap();
    enqueue(&mut late, &event(&topic, "late")).await.unwrap();
    late.commit().await.unwrap();
    Relay::new(pool.clone(), kafka().producer().unwrap()).publish_pending().await.unwrap();
    eventually("the late event", Duration::from_secs(60), || async {
        (effects(&pool, "late").await == 1).then_some(())
    })
    .await;
    for key in ["ok", "dup", "flaky", "after"] {
        assert_eq!(effects(&pool, key).await, 1, "{key} applied exactly once across the restart");
    }
    shutdown.cancel();
    task.await.unwrap();
}

struct TraceRecorder;

impl Handler for TraceRecorder {
    fn handle<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        event: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let trace = shop_kit::telemetry::trace_id(&tracing::Span::current()).unwrap_or_default();
            sqlx::query("INSERT INTO effects VALUES ($1, $2)")
                .bind(event.ce_id)
                .bind(trace)
                .execute(connection)
                .await
                .map_err(|error| HandleError::Retryable(error.into()))?;
            Ok(())
        })
    }
}

#[tokio::test]
async fn the_consumer_continues_the_producers_trace() {
    let topic = unique("test.trace");
    let (_db, pool) = setup(&topic).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut incoming = http::HeaderMap::new();
    incoming.insert("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01").parse().unwrap());
    let span = tracing::info_span!("request");
    shop_kit::telemetry::continue_trace(&span, &incoming);
    let event = event(&topic, "traced");
    {
        let mut transaction = pool.begin().await.unwrap();
        use tracing::Instrument as _;
        enqueue(&mut transaction, &event).instrument(span.clone()).await.unwrap();
        transaction.commit().await.unwrap();
    }
    Relay::new(pool.clone(), kafka().producer().unwrap()).publish_pending().await.unwrap();
    let headers = &read(&topic, 1).await[0].1;
    assert!(headers["traceparent"].starts_with(&format!("00-{trace_id}-")), "{headers:?}");

    let runner =
        ConsumerRunner::new(&kafka(), &unique("group"), &[topic.as_str()], pool.clone(), TraceRecorder).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let recorded: String = eventually("the event to be consumed", Duration::from_secs(60), || async {
        sqlx::query_scalar("SELECT key FROM effects WHERE ce_id = $1")
            .bind(event.id)
            .fetch_optional(&pool)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(recorded, trace_id, "the consumer's span belongs to the producer's trace");
    shutdown.cancel();
    task.await.unwrap();
}
