//! The outbox, relay and consumer runner against the real broker and Postgres. Every test
//! uses its own topics, consumer groups and database.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly on purpose")]

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
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
    ConsumerRunner, Event, HandleError, Handler, KafkaConfig, Publisher, Received, Relay, enqueue, ensure_topics,
};
use shop_proto::{contracts, shop::events::v1::UserRegistered};
use shop_testkit::{TestDb, eventually};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

shop_kit::consumes! {
    /// What the test handlers take: the user topic's one type.
    enum Users {
        Registered(UserRegistered),
    }
}

/// A service's own migrations (the `effects` table), applied with the kit's.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("tests/fixtures/migrations");

/// The broker, with a prefix of the test's own: its topics and groups are its alone.
fn kafka(prefix: &str) -> KafkaConfig {
    let mut config =
        KafkaConfig::for_brokers(&std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()));
    config.topic_prefix = prefix.to_owned();
    config
}

fn publisher() -> Publisher {
    Publisher::new(&kafka("")).unwrap()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}.{}", uuid::Uuid::now_v7().simple())
}

/// A fresh prefix, database and user topic; returns the prefix, the topic's full name, the
/// database and its pool.
async fn setup(name: &str) -> (String, String, TestDb, sqlx::PgPool) {
    shop_testkit::init_tracing();
    let prefix = format!("{}.", unique(name));
    let topic = kafka(&prefix).topics().name(contracts::USER);
    let db = TestDb::new().await;
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    shop_kit::db::prepare(&pool, &MIGRATOR).await.unwrap();
    ensure_topics(&kafka(&prefix), &[&topic], 3).await.unwrap();
    (prefix, topic, db, pool)
}

fn event(prefix: &str, user: &str) -> Event {
    let message = UserRegistered {
        user_id: user.into(),
        email: format!("{user}@example.com"),
        name: user.into(),
        registered_at: None,
    };
    kafka(prefix).topics().event(user, &message)
}

/// Reads `count` messages from `topic` with a fresh group; (key, headers, payload) each.
async fn read(topic: &str, count: usize) -> Vec<(String, HashMap<String, String>, Vec<u8>)> {
    let consumer: StreamConsumer = kafka("").consumer(&unique("reader")).unwrap();
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
    let (prefix, topic, _db, pool) = setup("outbox").await;

    let mut committed = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO effects VALUES (gen_random_uuid(), 'ada')").execute(&mut *committed).await.unwrap();
    let first = event(&prefix, "ada");
    let second = event(&prefix, "ada");
    enqueue(&mut committed, &first).await.unwrap();
    enqueue(&mut committed, &second).await.unwrap();
    committed.commit().await.unwrap();
    let mut rolled_back = pool.begin().await.unwrap();
    enqueue(&mut rolled_back, &event(&prefix, "ghost")).await.unwrap();
    rolled_back.rollback().await.unwrap();

    let relay = Relay::new(pool.clone(), &publisher());
    assert_eq!(relay.publish_pending().await.unwrap(), 2);
    assert_eq!(relay.publish_pending().await.unwrap(), 0, "published rows are not sent again");

    let messages = read(&topic, 2).await;
    let ids: Vec<&str> = messages.iter().map(|(_, headers, _)| headers["ce_id"].as_str()).collect();
    assert_eq!(ids, [first.id.to_string(), second.id.to_string()], "one key's events keep their order");
    let (key, headers, payload) = &messages[0];
    assert_eq!(key, "ada");
    assert_eq!(headers["ce_specversion"], "1.0");
    assert_eq!(headers["ce_type"], "shop.user.v1.UserRegistered", "the type from the contract, without the prefix");
    assert_eq!(headers["ce_source"], "/shop/user", "the topic's owner");
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
    let (prefix, topic, _db, pool) = setup("relay").await;
    let shutdown = CancellationToken::new();
    for _ in 0..2 {
        let relay = Relay::new(pool.clone(), &publisher()).poll_interval(Duration::from_secs(60));
        tokio::spawn(relay.run(shutdown.clone()));
    }
    eventually("both relays to LISTEN", Duration::from_secs(10), || async {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (listening == 2).then_some(())
    })
    .await;
    let mut ids = Vec::new();
    for index in 0..40 {
        let mut transaction = pool.begin().await.unwrap();
        let event = event(&prefix, &format!("user-{}", index % 4));
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
    type Event = Users;

    fn handle<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        event: &'a Received<Users>,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            if event.key == "poison" {
                return Err(HandleError::permanent(anyhow::anyhow!("cannot be applied")));
            }
            let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
            sqlx::query("INSERT INTO effects VALUES ($1, $2)")
                .bind(event.ce_id)
                .bind(&event.key)
                .execute(connection)
                .await?;
            if event.key == "flaky" && attempt <= self.fail_first {
                // The effect above is rolled back with the transaction.
                return Err(HandleError::retryable(anyhow::anyhow!("transient failure {attempt}")));
            }
            if event.key == "broken" {
                return Err(HandleError::retryable(anyhow::anyhow!("always fails")));
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
    let (prefix, topic, _db, pool) = setup("consume").await;
    let service = "recorder";
    let group = kafka(&prefix).group(service);

    let mut transaction = pool.begin().await.unwrap();
    let duplicate = event(&prefix, "dup");
    for event in [
        event(&prefix, "ok"),
        duplicate.clone(),
        duplicate.clone(),
        event(&prefix, "flaky"),
        event(&prefix, "broken"),
        event(&prefix, "poison"),
        event(&prefix, "after"),
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
    Relay::new(pool.clone(), &publisher()).publish_pending().await.unwrap();

    shop_kit::metrics::handle();
    let attempts = Arc::new(AtomicU32::new(0));
    let runner = ConsumerRunner::new(
        &kafka(&prefix),
        &publisher(),
        service,
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
    let dead = read(&format!("{topic}.dlq"), 2).await;
    // The outcome is counted once the broker has acknowledged the DLQ record, which may be
    // after a reader already sees it.
    let dead_lettered = format!(r#"events_consumed_total{{consumer="{group}",outcome="dead_lettered"}} 2"#);
    eventually("both dead letters counted", Duration::from_secs(30), || async {
        shop_kit::metrics::render().lines().any(|line| line == dead_lettered).then_some(())
    })
    .await;
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
        &kafka(&prefix),
        &publisher(),
        service,
        pool.clone(),
        Recorder { fail_first: 0, attempts: Arc::new(AtomicU32::new(0)) },
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(again.run(shutdown.clone()));
    let mut late = pool.begin().await.unwrap();
    enqueue(&mut late, &event(&prefix, "late")).await.unwrap();
    late.commit().await.unwrap();
    Relay::new(pool.clone(), &publisher()).publish_pending().await.unwrap();
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
    type Event = Users;

    fn handle<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        event: &'a Received<Users>,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            let trace = shop_kit::telemetry::trace_id(&tracing::Span::current()).unwrap_or_default();
            sqlx::query("INSERT INTO effects VALUES ($1, $2)")
                .bind(event.ce_id)
                .bind(trace)
                .execute(connection)
                .await?;
            Ok(())
        })
    }
}

#[tokio::test]
async fn the_consumer_continues_the_producers_trace() {
    let (prefix, topic, _db, pool) = setup("trace").await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut incoming = http::HeaderMap::new();
    incoming.insert("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01").parse().unwrap());
    let span = tracing::info_span!("request");
    shop_kit::telemetry::continue_trace(&span, &incoming);
    let event = event(&prefix, "traced");
    {
        let mut transaction = pool.begin().await.unwrap();
        use tracing::Instrument as _;
        enqueue(&mut transaction, &event).instrument(span.clone()).await.unwrap();
        transaction.commit().await.unwrap();
    }
    Relay::new(pool.clone(), &publisher()).publish_pending().await.unwrap();
    let headers = &read(&topic, 1).await[0].1;
    assert!(headers["traceparent"].starts_with(&format!("00-{trace_id}-")), "{headers:?}");

    let runner = ConsumerRunner::new(&kafka(&prefix), &publisher(), "tracer", pool.clone(), TraceRecorder).unwrap();
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

/// Records each effect with the transaction it ran in and the trace it ran under.
struct BatchRecorder {
    flaky_failed: AtomicBool,
}

impl Handler for BatchRecorder {
    type Event = Users;

    fn handle<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        event: &'a Received<Users>,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            if event.key == "poison" {
                return Err(HandleError::permanent(anyhow::anyhow!("cannot be applied")));
            }
            let trace = shop_kit::telemetry::trace_id(&tracing::Span::current()).unwrap_or_default();
            sqlx::query("INSERT INTO batch_effects VALUES ($1, $2, $3, txid_current())")
                .bind(event.ce_id)
                .bind(&event.key)
                .bind(trace)
                .execute(connection)
                .await?;
            if event.key == "flaky" && !self.flaky_failed.swap(true, Ordering::SeqCst) {
                return Err(HandleError::retryable(anyhow::anyhow!("transient failure")));
            }
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_backlog_is_applied_in_batches_exactly_once_and_a_failed_batch_falls_back_to_one_at_a_time() {
    let (prefix, topic, _db, pool) = setup("batch").await;
    sqlx::query(
        "CREATE TABLE batch_effects (ce_id uuid NOT NULL, key text NOT NULL, trace text NOT NULL, tx bigint NOT NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    // Every event under a trace of its own, all published before the consumer starts: a
    // backlog, which the client fetches many at a time.
    let mut expected_trace = HashMap::new();
    let mut transaction = pool.begin().await.unwrap();
    let mut events: Vec<Event> = (0..60).map(|index| event(&prefix, &format!("k{index}"))).collect();
    // The same event twice (same ce_id), as after a relay crash, and two that fail.
    let duplicate = event(&prefix, "dup");
    events.extend([duplicate.clone(), event(&prefix, "poison"), event(&prefix, "flaky"), duplicate]);
    sqlx::query("ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_id_key").execute(&mut *transaction).await.unwrap();
    for (index, event) in events.iter().enumerate() {
        let trace_id = format!("{:032x}", index + 1);
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01").parse().unwrap());
        let span = tracing::info_span!("request");
        shop_kit::telemetry::continue_trace(&span, &headers);
        use tracing::Instrument as _;
        enqueue(&mut transaction, event).instrument(span).await.unwrap();
        expected_trace.entry(event.key.clone()).or_insert(trace_id);
    }
    transaction.commit().await.unwrap();
    Relay::new(pool.clone(), &publisher()).publish_pending().await.unwrap();

    let runner = ConsumerRunner::new(
        &kafka(&prefix),
        &publisher(),
        "batcher",
        pool.clone(),
        BatchRecorder { flaky_failed: AtomicBool::new(false) },
    )
    .unwrap()
    .retries(3, Duration::from_millis(20))
    .batch(100);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    let applied = 62; // 60 + dup + flaky; poison never applies
    eventually("every event to be applied", Duration::from_secs(60), || async {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM batch_effects").fetch_one(&pool).await.unwrap();
        (count >= applied).then_some(())
    })
    .await;
    let dead = read(&format!("{topic}.dlq"), 1).await;
    assert_eq!(dead[0].0, "poison", "the event that cannot apply is dead-lettered on its own");

    let rows: Vec<(uuid::Uuid, String, String, i64)> =
        sqlx::query_as("SELECT ce_id, key, trace, tx FROM batch_effects").fetch_all(&pool).await.unwrap();
    assert_eq!(rows.len() as i64, applied, "nothing applied twice: {rows:?}");
    let mut ids: Vec<uuid::Uuid> = rows.iter().map(|row| row.0).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as i64, applied, "each ce_id once (the duplicate too)");
    for (_, key, trace, _) in &rows {
        assert_eq!(trace, &expected_trace[key], "{key} was applied under its own producer's trace");
    }
    let transactions: std::collections::HashSet<i64> = rows.iter().map(|row| row.3).collect();
    assert!(
        transactions.len() < rows.len(),
        "a backlog is applied several events to a transaction ({} transactions for {} events)",
        transactions.len(),
        rows.len()
    );
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_relay_session_frozen_mid_transaction_releases_its_topic_after_the_idle_timeout() {
    let (prefix, topic, db, pool) = setup("frozen").await;
    let mut transaction = pool.begin().await.unwrap();
    enqueue(&mut transaction, &event(&prefix, "waiting")).await.unwrap();
    transaction.commit().await.unwrap();

    // A relay that took the topic's lock and then froze (its process stopped, its network
    // gone): the session stays open, idle in its transaction.
    let mut config = shop_kit::db::DatabaseConfig::for_url(db.url());
    config.idle_in_transaction_timeout = Duration::from_millis(500);
    let frozen_pool = shop_kit::db::connect(&config).await.unwrap();
    let mut frozen = frozen_pool.begin().await.unwrap();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('shop-outbox:' || $1))")
        .bind(&topic)
        .fetch_one(&mut *frozen)
        .await
        .unwrap();
    assert!(locked);

    let relay = Relay::new(pool.clone(), &publisher());
    assert_eq!(relay.publish_pending().await.unwrap(), 0, "the topic is another relay's while it holds the lock");
    eventually("Postgres to end the frozen session and the topic to be published", Duration::from_secs(10), || async {
        (relay.publish_pending().await.unwrap_or(0) == 1).then_some(())
    })
    .await;
    assert_eq!(read(&topic, 1).await[0].0, "waiting");
    let error = sqlx::query("SELECT 1").execute(&mut *frozen).await.unwrap_err();
    assert!(error.to_string().contains("idle-in-transaction"), "the frozen session was ended by the timeout: {error}");
}

#[tokio::test]
async fn an_unhandled_type_and_an_undecodable_payload_are_dead_lettered_with_the_reason() {
    let (prefix, topic, _db, pool) = setup("refused").await;
    let mut unknown = event(&prefix, "unknown");
    unknown.ce_type = "shop.user.v1.UserDeleted".into();
    let mut garbage = event(&prefix, "garbage");
    garbage.payload = vec![0xff, 0xff, 0xff];
    let mut transaction = pool.begin().await.unwrap();
    for event in [&unknown, &garbage, &event(&prefix, "fine")] {
        enqueue(&mut transaction, event).await.unwrap();
    }
    transaction.commit().await.unwrap();
    Relay::new(pool.clone(), &publisher()).publish_pending().await.unwrap();

    let runner = ConsumerRunner::new(
        &kafka(&prefix),
        &publisher(),
        "refuser",
        pool.clone(),
        Recorder { fail_first: 0, attempts: Arc::new(AtomicU32::new(0)) },
    )
    .unwrap();
    assert_eq!(runner.topics(), std::slice::from_ref(&topic), "the topics come from the types the consumer names");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    eventually("the fine event", Duration::from_secs(60), || async {
        (effects(&pool, "fine").await == 1).then_some(())
    })
    .await;
    let dead = read(&format!("{topic}.dlq"), 2).await;
    let reason = |key: &str| dead.iter().find(|(k, _, _)| k == key).map(|(_, headers, _)| headers["dlq_error"].clone());
    let unknown_reason = reason("unknown").unwrap();
    assert!(unknown_reason.contains("unhandled event type \"shop.user.v1.UserDeleted\""), "{unknown_reason}");
    let garbage_reason = reason("garbage").unwrap();
    assert!(
        garbage_reason.starts_with("the payload of a shop.user.v1.UserRegistered event does not decode: "),
        "{garbage_reason}"
    );
    assert_eq!(effects(&pool, "unknown").await + effects(&pool, "garbage").await, 0, "neither was applied");
    shutdown.cancel();
    task.await.unwrap();
}

/// Only the service that owns a topic writes it: an event on it whose `ce_source` is anyone
/// else's (or missing) is dead-lettered with the reason and never applied, whoever could reach
/// the broker; the owner's own events go on as before.
#[tokio::test]
async fn an_event_from_a_source_that_does_not_own_the_topic_is_dead_lettered_unapplied() {
    let (prefix, topic, _db, pool) = setup("forged").await;
    let mut forged = event(&prefix, "forged");
    forged.source = "/shop/attacker".into();
    let mut transaction = pool.begin().await.unwrap();
    for event in [&forged, &event(&prefix, "genuine")] {
        enqueue(&mut transaction, event).await.unwrap();
    }
    transaction.commit().await.unwrap();
    Relay::new(pool.clone(), &publisher()).publish_pending().await.unwrap();

    let runner = ConsumerRunner::new(
        &kafka(&prefix),
        &publisher(),
        "believer",
        pool.clone(),
        Recorder { fail_first: 0, attempts: Arc::new(AtomicU32::new(0)) },
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));
    eventually("the genuine event", Duration::from_secs(60), || async {
        (effects(&pool, "genuine").await == 1).then_some(())
    })
    .await;
    let dead = read(&format!("{topic}.dlq"), 1).await;
    assert_eq!(dead[0].0, "forged");
    let reason = &dead[0].1["dlq_error"];
    assert!(
        reason.contains(r#"ce_source Some("/shop/attacker") is not the owner of shop.user.v1 (/shop/user)"#),
        "{reason}"
    );
    assert_eq!(effects(&pool, "forged").await, 0, "the forged event was not applied");
    shutdown.cancel();
    task.await.unwrap();
}
