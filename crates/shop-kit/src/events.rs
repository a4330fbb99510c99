//! Reliable messaging over Kafka: a transactional outbox, its relay, and a consumer runner
//! that applies each event exactly once.
//!
//! - [`enqueue`] writes an event into the `outbox` table in the caller's transaction, next
//!   to the state change it describes, and wakes the relay (`NOTIFY shop_outbox`).
//! - [`Relay`] publishes unpublished rows in order with an idempotent producer (`acks=all`)
//!   and marks them published. It wakes on `LISTEN shop_outbox` and polls as a fallback.
//!   Rows are taken `FOR UPDATE SKIP LOCKED`, and one relay at a time publishes a given topic
//!   (a transaction-scoped advisory lock per topic), so several replicas can run relays
//!   without reordering one aggregate's events. Backlog size and oldest age are metrics.
//! - [`ConsumerRunner`] reads a topic in a consumer group (the service's name) with
//!   auto-commit off. For each message it opens a transaction, records the CloudEvents
//!   `ce_id` in the `inbox` table (a duplicate is skipped), runs the handler's effect in the
//!   same transaction, commits, and only then commits the offset. A handler failure is
//!   retried with backoff and jitter a bounded number of times, then the message goes to
//!   `<topic>.dlq` with the error in its headers; nothing is dropped silently. Database
//!   outages are retried without bound (the message is not at fault).
//!
//! Messages follow the CloudEvents Kafka binding in binary mode: headers `ce_specversion`,
//! `ce_id` (UUIDv7), `ce_source`, `ce_type`, `ce_time`, `content-type:
//! application/protobuf`, and W3C `traceparent`/`tracestate`; the key is the aggregate id.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context as _;
use futures::future::BoxFuture;
use opentelemetry::propagation::{Extractor, Injector};
use rand::Rng as _;
use rdkafka::{
    ClientConfig, Message as _, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{CommitMode, Consumer as _, StreamConsumer},
    error::RDKafkaErrorCode,
    message::{BorrowedMessage, Header, Headers as _, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use sqlx::{PgConnection, PgPool, postgres::PgListener};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

use crate::config::{ConfigError, Vars};

/// The channel the relay listens on.
const CHANNEL: &str = "shop_outbox";

/// Where the brokers are, and how topics are named.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// `KAFKA_BROKERS`: comma-separated `host:port` (default `127.0.0.1:9092`).
    pub brokers: String,
    /// `KAFKA_TOPIC_PREFIX`: prepended to every topic name (default none); tests use a
    /// unique one so that they never see each other's events.
    pub topic_prefix: String,
    /// `KAFKA_CREATE_TOPICS`: create the service's topics at start (development and tests;
    /// in clusters they are declared as Strimzi KafkaTopic resources). Default false.
    pub create_topics: bool,
}

impl KafkaConfig {
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let brokers = vars.raw("KAFKA_BROKERS").unwrap_or("127.0.0.1:9092").to_owned();
        if brokers
            .split(',')
            .any(|broker| broker.trim().rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()))
        {
            return Err(vars.invalid("KAFKA_BROKERS", "expected host:port[,host:port...]"));
        }
        Ok(Self {
            brokers,
            topic_prefix: vars.raw("KAFKA_TOPIC_PREFIX").unwrap_or("").to_owned(),
            create_topics: vars.or("KAFKA_CREATE_TOPICS", false)?,
        })
    }

    /// A configuration for `brokers` with no prefix (tests, tools).
    pub fn for_brokers(brokers: &str) -> Self {
        Self { brokers: brokers.to_owned(), topic_prefix: String::new(), create_topics: true }
    }

    /// The full name of a topic: `<prefix><name>`.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }

    /// An idempotent producer: `acks=all`, ordered retries, no duplicates on retry.
    pub fn producer(&self) -> anyhow::Result<FutureProducer> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "2")
            .create()
            .context("cannot create the Kafka producer")
    }

    /// A consumer in `group` that commits offsets only when told to.
    pub fn consumer(&self, group: &str) -> anyhow::Result<StreamConsumer> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("enable.partition.eof", "false")
            // A fetch returns as soon as one event is there, or after 25 ms: a saga step
            // waits for its event, not for librdkafka's default 500 ms fetch window (some
            // brokers, tansu among them, hold a fetch for the whole window).
            .set("fetch.wait.max.ms", "25")
            .create()
            .context("cannot create the Kafka consumer")
    }
}

/// Creates `topics` (full names) and their `.dlq` twins if they do not exist (development
/// and tests; clusters declare them as Strimzi KafkaTopic resources).
pub async fn ensure_topics(config: &KafkaConfig, topics: &[&str], partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .context("cannot create a Kafka admin client")?;
    let names: Vec<String> = topics.iter().flat_map(|topic| [(*topic).to_owned(), format!("{topic}.dlq")]).collect();
    let new: Vec<NewTopic<'_>> =
        names.iter().map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(new.iter(), &options).await.context("cannot create topics")? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Creates the `outbox` and `inbox` tables if they do not exist. Safe to run from many
/// replicas at once (it takes an advisory lock).
pub async fn ensure_tables(pool: &PgPool) -> anyhow::Result<()> {
    let mut transaction = pool.begin().await.context("cannot reach the database")?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('shop-events-tables'))").execute(&mut *transaction).await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS outbox (
            seq          bigserial   PRIMARY KEY,
            id           uuid        NOT NULL UNIQUE,
            topic        text        NOT NULL,
            key          text        NOT NULL,
            ce_type      text        NOT NULL,
            ce_source    text        NOT NULL,
            payload      bytea       NOT NULL,
            traceparent  text,
            tracestate   text,
            created_at   timestamptz NOT NULL DEFAULT now(),
            published_at timestamptz
        );
        CREATE INDEX IF NOT EXISTS outbox_pending_idx ON outbox (topic, seq) WHERE published_at IS NULL;
        CREATE TABLE IF NOT EXISTS inbox (
            consumer     text        NOT NULL,
            ce_id        uuid        NOT NULL,
            processed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (consumer, ce_id)
        );",
    )
    .execute(&mut *transaction)
    .await
    .context("cannot create the outbox and inbox tables")?;
    transaction.commit().await?;
    Ok(())
}

/// An event to publish.
#[derive(Clone, Debug)]
pub struct Event {
    /// The CloudEvents id: the consumers' deduplication key.
    pub id: Uuid,
    pub topic: String,
    /// The aggregate id: one aggregate's events keep their order.
    pub key: String,
    /// `shop.order.v1.OrderPlaced`
    pub ce_type: String,
    /// The producing service, `/shop/order`.
    pub source: String,
    /// The encoded protobuf message.
    pub payload: Vec<u8>,
}

impl Event {
    /// An event carrying `message` to `topic` (a full name), typed
    /// `<aggregate topic>.<message_name>` (`shop.user.v1.UserRegistered`): the type never
    /// carries a test prefix.
    pub fn new(
        topic: &str,
        key: impl Into<String>,
        source: &str,
        message_name: &str,
        message: &impl prost::Message,
    ) -> Self {
        let aggregate = topic.find("shop.").map_or(topic, |at| &topic[at..]);
        Self {
            id: Uuid::now_v7(),
            topic: topic.to_owned(),
            key: key.into(),
            ce_type: format!("{aggregate}.{message_name}"),
            source: source.to_owned(),
            payload: message.encode_to_vec(),
        }
    }
}

struct MapInjector<'a>(&'a mut HashMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// Writes `event` into the outbox within the caller's transaction, with the current trace
/// context, and wakes the relay when the transaction commits.
pub async fn enqueue(connection: &mut PgConnection, event: &Event) -> Result<(), sqlx::Error> {
    let mut trace = HashMap::new();
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MapInjector(&mut trace))
    });
    sqlx::query(
        "INSERT INTO outbox (id, topic, key, ce_type, ce_source, payload, traceparent, tracestate) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(event.id)
    .bind(&event.topic)
    .bind(&event.key)
    .bind(&event.ce_type)
    .bind(&event.source)
    .bind(&event.payload)
    .bind(trace.get("traceparent"))
    .bind(trace.get("tracestate"))
    .execute(&mut *connection)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(connection).await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    seq: i64,
    id: Uuid,
    topic: String,
    key: String,
    ce_type: String,
    ce_source: String,
    payload: Vec<u8>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// Publishes the outbox.
pub struct Relay {
    pool: PgPool,
    producer: FutureProducer,
    batch_size: i64,
    poll_interval: Duration,
}

impl Relay {
    pub fn new(pool: PgPool, producer: FutureProducer) -> Self {
        Self { pool, producer, batch_size: 500, poll_interval: Duration::from_secs(1) }
    }

    /// How often to look without a notification (default 1 s).
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Publishes until `shutdown`, then returns after the batch in hand.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut listener = match PgListener::connect_with(&self.pool).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => Some(listener),
                Err(error) => {
                    tracing::warn!(%error, "outbox relay cannot LISTEN; polling only");
                    None
                }
            },
            Err(error) => {
                tracing::warn!(%error, "outbox relay cannot LISTEN; polling only");
                None
            }
        };
        let mut failures = 0_u32;
        loop {
            match self.publish_pending().await {
                Ok(published) => {
                    failures = 0;
                    if published > 0 {
                        continue;
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = format!("{error:#}"), "outbox relay failed; retrying");
                }
            }
            self.record_backlog().await;
            let pause = if failures == 0 { self.poll_interval } else { backoff(failures, Duration::from_millis(200)) };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
                notified = async {
                    match listener.as_mut() {
                        Some(listener) => listener.recv().await.map(drop),
                        None => std::future::pending().await,
                    }
                } => {
                    if let Err(error) = notified {
                        tracing::warn!(%error, "outbox LISTEN connection lost; it reconnects on the next wait");
                    }
                }
            }
        }
    }

    /// Publishes one batch per topic that has pending rows; returns how many were published.
    pub async fn publish_pending(&self) -> anyhow::Result<usize> {
        let topics: Vec<String> = sqlx::query_scalar("SELECT DISTINCT topic FROM outbox WHERE published_at IS NULL")
            .fetch_all(&self.pool)
            .await
            .context("cannot read the outbox")?;
        // A topic that cannot be published (its topic missing, say) must not hold up the
        // others: each is tried; the first error is reported once nothing else moved.
        let mut published = 0;
        let mut failed = None;
        for topic in topics {
            match self.publish_topic(&topic).await {
                Ok(count) => published += count,
                Err(error) => {
                    if published > 0 || failed.is_some() {
                        tracing::warn!(topic, error = format!("{error:#}"), "outbox topic not published; retrying");
                    }
                    failed.get_or_insert(error);
                }
            }
        }
        match failed {
            Some(error) if published == 0 => Err(error),
            _ => Ok(published),
        }
    }

    async fn publish_topic(&self, topic: &str) -> anyhow::Result<usize> {
        let mut transaction = self.pool.begin().await?;
        // One relay per topic at a time keeps each key's events in order across replicas.
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('shop-outbox:' || $1))")
            .bind(topic)
            .fetch_one(&mut *transaction)
            .await?;
        if !locked {
            return Ok(0);
        }
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT seq, id, topic, key, ce_type, ce_source, payload, traceparent, tracestate, created_at FROM outbox \
             WHERE topic = $1 AND published_at IS NULL ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(topic)
        .bind(self.batch_size)
        .fetch_all(&mut *transaction)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        // Queue every record first (the producer keeps their order per partition), then wait.
        let deliveries: Vec<_> = rows
            .iter()
            .map(|row| {
                let id = row.id.to_string();
                let time = row.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let mut headers = OwnedHeaders::new_with_capacity(8)
                    .insert(Header { key: "ce_specversion", value: Some("1.0") })
                    .insert(Header { key: "ce_id", value: Some(id.as_str()) })
                    .insert(Header { key: "ce_source", value: Some(row.ce_source.as_str()) })
                    .insert(Header { key: "ce_type", value: Some(row.ce_type.as_str()) })
                    .insert(Header { key: "ce_time", value: Some(time.as_str()) })
                    .insert(Header { key: "content-type", value: Some("application/protobuf") });
                if let Some(traceparent) = &row.traceparent {
                    headers = headers.insert(Header { key: "traceparent", value: Some(traceparent.as_str()) });
                }
                if let Some(tracestate) = &row.tracestate {
                    headers = headers.insert(Header { key: "tracestate", value: Some(tracestate.as_str()) });
                }
                let record = FutureRecord::to(&row.topic).key(&row.key).payload(&row.payload).headers(headers);
                self.producer.send(record, Duration::from_secs(5))
            })
            .collect();
        for (row, delivery) in rows.iter().zip(futures::future::join_all(deliveries).await) {
            if let Err((error, _)) = delivery {
                // Nothing is marked: the batch is published again later; consumers dedupe.
                anyhow::bail!("publishing event {} to {} failed: {error}", row.id, row.topic);
            }
        }
        let sequence: Vec<i64> = rows.iter().map(|row| row.seq).collect();
        sqlx::query("UPDATE outbox SET published_at = now() WHERE seq = ANY($1)")
            .bind(&sequence)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        metrics::counter!("outbox_published_total", "topic" => topic.to_owned()).increment(rows.len() as u64);
        // By type too: the saga funnel (placed → confirmed / cancelled) on the dashboard. The
        // types are a fixed set, so the label stays small.
        for row in &rows {
            metrics::counter!("events_published_total", "type" => row.ce_type.clone()).increment(1);
        }
        Ok(rows.len())
    }

    async fn record_backlog(&self) {
        let backlog: Result<(i64, Option<f64>), _> = sqlx::query_as(
            "SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8 FROM outbox WHERE published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await;
        if let Ok((count, oldest)) = backlog {
            metrics::gauge!("outbox_backlog_events").set(count as f64);
            metrics::gauge!("outbox_oldest_event_age_seconds").set(oldest.unwrap_or(0.0));
        }
        // Published rows are kept a day for inspection, then removed.
        let _ =
            sqlx::query("DELETE FROM outbox WHERE published_at < now() - interval '1 day'").execute(&self.pool).await;
    }
}

/// `base × 2^(attempt-1)`, capped at 30 s, with ±50 % jitter.
fn backoff(attempt: u32, base: Duration) -> Duration {
    let exponential = base.saturating_mul(2_u32.saturating_pow(attempt.saturating_sub(1).min(16)));
    let capped = exponential.min(Duration::from_secs(30));
    capped.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
}

/// A consumed event.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub ce_id: Uuid,
    pub ce_type: String,
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
}

/// Why a handler could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying (a dependency hiccup); after the bounded retries it goes to the DLQ.
    #[error("{0:#}")]
    Retryable(anyhow::Error),
    /// Never going to work (undecodable, contradicts our state): straight to the DLQ.
    #[error("{0:#}")]
    Permanent(anyhow::Error),
}

/// Applies events. The effect must be written through `connection`, which is the same
/// transaction that records the event as processed.
pub trait Handler: Send + Sync + 'static {
    /// Runs after the effect has committed (cache invalidation, say); must not fail.
    fn after_commit<'a>(&'a self, _event: &'a Incoming) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    fn handle<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        event: &'a Incoming,
    ) -> BoxFuture<'a, Result<(), HandleError>>;
}

/// What happened to one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    DeadLettered,
}

/// How often the runner checks that its group is not stuck (see [`ConsumerRunner::run`]).
const WATCHDOG_INTERVAL: Duration = Duration::from_secs(10);

/// Runs a handler over topics in a consumer group.
pub struct ConsumerRunner<A> {
    name: String,
    config: KafkaConfig,
    topics: Vec<String>,
    consumer: Arc<StreamConsumer>,
    producer: FutureProducer,
    apply: Arc<A>,
    max_attempts: u32,
    retry_base: Duration,
}

/// What the watchdog compares between two checks: whether this member holds partitions,
/// whether events wait beyond the group's committed offsets, and those offsets.
#[derive(Debug, PartialEq, Eq)]
struct GroupProgress {
    assigned: bool,
    waiting: bool,
    committed: Vec<(String, i32, i64)>,
}

impl GroupProgress {
    /// Blocking broker calls: run off the async threads. `None` if the broker did not answer.
    fn read(consumer: &StreamConsumer, topics: &[String]) -> Option<Self> {
        let timeout = Duration::from_secs(5);
        let assigned = consumer.assignment().ok()?.count() > 0;
        let mut partitions = TopicPartitionList::new();
        for topic in topics {
            let metadata = consumer.fetch_metadata(Some(topic), timeout).ok()?;
            for partition in metadata.topics().iter().flat_map(|topic| topic.partitions()) {
                partitions.add_partition(topic, partition.id());
            }
        }
        let committed = consumer.committed_offsets(partitions, timeout).ok()?;
        let mut waiting = false;
        let mut offsets = Vec::new();
        for element in committed.elements() {
            let (low, high) = consumer.fetch_watermarks(element.topic(), element.partition(), timeout).ok()?;
            let next = element.offset().to_raw().filter(|offset| *offset >= 0).unwrap_or(low);
            waiting |= high > next;
            offsets.push((element.topic().to_owned(), element.partition(), next));
        }
        offsets.sort();
        Some(Self { assigned, waiting, committed: offsets })
    }

    /// Stuck: at this check and the one `before`, no partition here, events waiting, and
    /// not one committed offset moved.
    fn stuck_since(&self, before: Option<&Self>) -> bool {
        let idle = |progress: &Self| !progress.assigned && progress.waiting;
        idle(self) && before.is_some_and(|before| idle(before) && before.committed == self.committed)
    }
}

/// Why applying an event failed.
pub enum ApplyError {
    /// The store is unreachable: not the message's fault, retried without bound.
    Infrastructure(anyhow::Error),
    /// The handler refused or failed.
    Handler(HandleError),
}

/// How a consumer applies an event exactly once: record its `ce_id` and make the effect
/// atomically, answering [`Outcome::Duplicate`] for a `ce_id` seen before.
pub trait ApplyOnce: Send + Sync + 'static {
    fn apply<'a>(&'a self, consumer: &'a str, event: &'a Incoming) -> BoxFuture<'a, Result<Outcome, ApplyError>>;
}

/// The Postgres way: the `inbox` row and the handler's effect in one transaction.
pub struct PgInbox<H> {
    pool: PgPool,
    handler: H,
}

impl<H: Handler> ApplyOnce for PgInbox<H> {
    fn apply<'a>(&'a self, consumer: &'a str, incoming: &'a Incoming) -> BoxFuture<'a, Result<Outcome, ApplyError>> {
        Box::pin(async move {
            let mut transaction = self.pool.begin().await.map_err(|error| ApplyError::Infrastructure(error.into()))?;
            let fresh = sqlx::query("INSERT INTO inbox (consumer, ce_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(consumer)
                .bind(incoming.ce_id)
                .execute(&mut *transaction)
                .await
                .map_err(|error| ApplyError::Infrastructure(error.into()))?
                .rows_affected()
                == 1;
            if !fresh {
                return Ok(Outcome::Duplicate);
            }
            self.handler.handle(&mut transaction, incoming).await.map_err(ApplyError::Handler)?;
            transaction.commit().await.map_err(|error| ApplyError::Infrastructure(error.into()))?;
            self.handler.after_commit(incoming).await;
            Ok(Outcome::Applied)
        })
    }
}

impl<H: Handler> ConsumerRunner<PgInbox<H>> {
    /// `name` is the consumer group and the inbox's consumer name (the service's name).
    pub fn new(config: &KafkaConfig, name: &str, topics: &[&str], pool: PgPool, handler: H) -> anyhow::Result<Self> {
        Self::with(config, name, topics, PgInbox { pool, handler })
    }
}

impl<A: ApplyOnce> ConsumerRunner<A> {
    /// A runner whose exactly-once step is `apply` (a service without Postgres).
    pub fn with(config: &KafkaConfig, name: &str, topics: &[&str], apply: A) -> anyhow::Result<Self> {
        let consumer = config.consumer(name)?;
        consumer.subscribe(topics).context("cannot subscribe")?;
        Ok(Self {
            name: name.to_owned(),
            config: config.clone(),
            topics: topics.iter().map(|topic| (*topic).to_owned()).collect(),
            consumer: Arc::new(consumer),
            producer: config.producer()?,
            apply: Arc::new(apply),
            max_attempts: 5,
            retry_base: Duration::from_millis(100),
        })
    }

    /// Attempts per message before it is dead-lettered (default 5), and the first backoff.
    #[must_use]
    pub fn retries(mut self, max_attempts: u32, base: Duration) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.retry_base = base;
        self
    }

    /// Consumes until `shutdown`; the message in hand is finished first.
    ///
    /// A watchdog rejoins the group under a new member id when the group is stuck: this
    /// member holds no partition while events wait and no member's committed offset moved
    /// for two checks in a row. A broker can leave a group formed with an empty assignment
    /// (tansu 0.6 does when a follower's SyncGroup races the eviction of a leader that was
    /// SIGKILLed); nothing else would ever unstick it.
    pub async fn run(mut self, shutdown: CancellationToken) {
        // Measured on the first message, then every 5 s at most.
        let mut lag_measured: Option<std::time::Instant> = None;
        let mut watchdog = tokio::time::interval(WATCHDOG_INTERVAL);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stalled: Option<GroupProgress> = None;
        loop {
            let consumer = Arc::clone(&self.consumer);
            let message = tokio::select! {
                () = shutdown.cancelled() => return,
                _ = watchdog.tick() => {
                    stalled = self.watch(stalled).await;
                    continue;
                }
                message = consumer.recv() => message,
            };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(consumer = %self.name, %error, "kafka receive failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let outcome = self.process(&message).await;
            metrics::counter!("events_consumed_total", "consumer" => self.name.clone(), "outcome" => format!("{outcome:?}"))
                .increment(1);
            // The effect (or the dead letter) is durable: now the offset may move on.
            while let Err(error) = consumer.commit_message(&message, CommitMode::Sync) {
                tracing::warn!(consumer = %self.name, %error, "cannot commit the offset; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if lag_measured.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
                lag_measured = Some(std::time::Instant::now());
                self.record_lag(message.topic().to_owned(), message.partition(), message.offset());
            }
        }
    }

    /// One watchdog check; returns the progress to compare with at the next one.
    async fn watch(&mut self, before: Option<GroupProgress>) -> Option<GroupProgress> {
        let consumer = Arc::clone(&self.consumer);
        let topics = self.topics.clone();
        let now = tokio::task::spawn_blocking(move || GroupProgress::read(&consumer, &topics)).await.ok().flatten()?;
        if !now.stuck_since(before.as_ref()) {
            return Some(now);
        }
        tracing::warn!(consumer = %self.name, "the group is stuck (no partition here, events waiting, no progress); rejoining");
        match self.config.consumer(&self.name).and_then(|fresh| {
            let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
            fresh.subscribe(&topics).context("cannot subscribe")?;
            Ok(fresh)
        }) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut self.consumer, Arc::new(fresh));
                // Closing leaves the group; librdkafka may block while it does.
                let _ = tokio::task::spawn_blocking(move || drop(old)).await;
                metrics::counter!("kafka_consumer_rejoins_total", "consumer" => self.name.clone()).increment(1);
                None
            }
            Err(error) => {
                tracing::warn!(consumer = %self.name, error = format!("{error:#}"), "cannot rejoin the group; will retry");
                Some(now)
            }
        }
    }

    async fn process(&self, message: &BorrowedMessage<'_>) -> Outcome {
        let headers = headers_of(message);
        let span = tracing::info_span!("consume", messaging.destination = message.topic(), ce_type = tracing::field::Empty,
            consumer = %self.name, otel.kind = "consumer");
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderMapExtractor(&headers))
        });
        let _ = span.set_parent(parent);
        async {
            let incoming = match parse(message, &headers) {
                Ok(incoming) => incoming,
                Err(error) => return self.dead_letter(message, &headers, &format!("{error:#}")).await,
            };
            tracing::Span::current().record("ce_type", incoming.ce_type.as_str());
            let mut attempt = 0_u32;
            loop {
                attempt += 1;
                match self.apply.apply(&self.name, &incoming).await {
                    Ok(outcome) => return outcome,
                    Err(ApplyError::Infrastructure(error)) => {
                        // Not the message's fault: wait for the database, however long.
                        tracing::warn!(error = format!("{error:#}"), "cannot reach the database; retrying the event");
                        attempt = attempt.saturating_sub(1);
                        tokio::time::sleep(backoff(2, self.retry_base.max(Duration::from_millis(250)))).await;
                    }
                    Err(ApplyError::Handler(HandleError::Permanent(error))) => {
                        return self.dead_letter(message, &headers, &format!("{error:#}")).await;
                    }
                    Err(ApplyError::Handler(HandleError::Retryable(error))) if attempt >= self.max_attempts => {
                        return self
                            .dead_letter(message, &headers, &format!("after {attempt} attempts: {error:#}"))
                            .await;
                    }
                    Err(ApplyError::Handler(HandleError::Retryable(error))) => {
                        tracing::info!(attempt, error = format!("{error:#}"), "event failed; retrying");
                        tokio::time::sleep(backoff(attempt, self.retry_base)).await;
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// `kafka_consumer_lag{consumer, topic, partition}`: messages behind the newest, measured
    /// off the consume path (asking the broker for watermarks blocks).
    fn record_lag(&self, topic: String, partition: i32, offset: i64) {
        let consumer = Arc::clone(&self.consumer);
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            if let Ok((_, high)) = consumer.fetch_watermarks(&topic, partition, Duration::from_secs(1)) {
                let lag = (high - offset - 1).max(0);
                metrics::gauge!("kafka_consumer_lag", "consumer" => name, "topic" => topic, "partition" => partition.to_string())
                    .set(lag as f64);
            }
        });
    }

    /// Publishes the message to `<topic>.dlq` with the error; retries until it is stored.
    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        headers: &HashMap<String, String>,
        error: &str,
    ) -> Outcome {
        let topic = format!("{}.dlq", message.topic());
        tracing::error!(dlq = %topic, error, "event dead-lettered");
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        loop {
            let mut out = OwnedHeaders::new_with_capacity(headers.len() + 4);
            for (key, value) in headers {
                out = out.insert(Header { key, value: Some(value.as_str()) });
            }
            out = out
                .insert(Header { key: "dlq_error", value: Some(error) })
                .insert(Header { key: "dlq_consumer", value: Some(self.name.as_str()) })
                .insert(Header { key: "dlq_partition", value: Some(partition.as_str()) })
                .insert(Header { key: "dlq_offset", value: Some(offset.as_str()) });
            let mut record = FutureRecord::to(&topic).headers(out);
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            match self.producer.send(record, Duration::from_secs(5)).await {
                Ok(_) => return Outcome::DeadLettered,
                Err((error, _)) => {
                    tracing::warn!(%error, dlq = %topic, "cannot publish to the DLQ; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

fn headers_of(message: &BorrowedMessage<'_>) -> HashMap<String, String> {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .filter_map(|header| Some((header.key.to_owned(), String::from_utf8(header.value?.to_vec()).ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

struct HeaderMapExtractor<'a>(&'a HashMap<String, String>);

impl Extractor for HeaderMapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

fn parse(message: &BorrowedMessage<'_>, headers: &HashMap<String, String>) -> anyhow::Result<Incoming> {
    let ce_id = headers.get("ce_id").context("the message has no ce_id header")?;
    let ce_id = Uuid::parse_str(ce_id).context("the ce_id header is not a UUID")?;
    let ce_type = headers.get("ce_type").context("the message has no ce_type header")?.clone();
    Ok(Incoming {
        ce_id,
        ce_type,
        topic: message.topic().to_owned(),
        key: message.key().map(|key| String::from_utf8_lossy(key).into_owned()).unwrap_or_default(),
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_stuck_only_when_idle_waiting_and_frozen_twice() {
        let progress = |assigned: bool, waiting: bool, offset: i64| GroupProgress {
            assigned,
            waiting,
            committed: vec![("shop.order.v1".into(), 0, offset), ("shop.order.v1".into(), 1, 7)],
        };
        let stuck = progress(false, true, 3);
        assert!(stuck.stuck_since(Some(&progress(false, true, 3))), "idle, waiting, frozen: stuck");
        assert!(!stuck.stuck_since(None), "one check is not enough");
        assert!(!stuck.stuck_since(Some(&progress(false, true, 2))), "another member made progress");
        assert!(!stuck.stuck_since(Some(&progress(true, true, 3))), "this member held partitions before");
        assert!(!progress(true, true, 3).stuck_since(Some(&stuck)), "this member holds partitions now");
        assert!(!progress(false, false, 3).stuck_since(Some(&progress(false, false, 3))), "nothing waits");
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for attempt in 1..40 {
            let pause = backoff(attempt, Duration::from_millis(100));
            assert!(pause <= Duration::from_secs(45), "attempt {attempt}: {pause:?}");
            assert!(pause >= Duration::from_millis(50), "attempt {attempt}: {pause:?}");
        }
        let message = shop_proto::shop::events::v1::UserRegistered::default();
        let event = Event::new("t123.shop.user.v1", "k", "/s", "UserRegistered", &message);
        assert_eq!(event.ce_type, "shop.user.v1.UserRegistered", "the prefix never leaks into the type");
        let brokers = |value: &str| KafkaConfig::from_vars(&Vars::default().with("KAFKA_BROKERS", value)).is_ok();
        assert!(brokers("127.0.0.1:9092") && brokers("a:1,b:2"));
        assert!(!brokers("nohost") && !brokers("a:notaport"));
    }
}
