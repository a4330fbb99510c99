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
//!   same transaction, commits, and only then lets the offset move on (offsets of applied
//!   events are committed every 200 ms and on shutdown). With [`ConsumerRunner::batch`], the
//!   events already waiting are applied together in one transaction (one commit, so one
//!   WAL flush, for the batch instead of one per event); if any of them fails, the batch
//!   rolls back and its events are applied one at a time as above. A handler failure is
//!   retried with backoff and jitter a bounded number of times, then the message goes to
//!   `<topic>.dlq` with the error in its headers; nothing is dropped silently. Database
//!   outages are retried without bound (the message is not at fault).
//!
//! Messages follow the CloudEvents Kafka binding in binary mode: headers `ce_specversion`,
//! `ce_id` (UUIDv7), `ce_source`, `ce_type`, `ce_time`, `content-type:
//! application/protobuf`, and W3C `traceparent`/`tracestate`; the key is the aggregate id.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use futures::{FutureExt as _, future::BoxFuture};
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

use crate::config::{ConfigError, HumanDuration, Vars};

/// The channel the relay listens on.
const CHANNEL: &str = "shop_outbox";

/// `KAFKA_FETCH_WAIT_MAX`'s default.
const DEFAULT_FETCH_WAIT_MAX: Duration = Duration::from_millis(25);

/// `KAFKA_CONSUMER_BATCH`'s default.
const DEFAULT_CONSUMER_BATCH: usize = 100;

/// How often a consumer commits the offsets of the events it has applied.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);

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
    /// `KAFKA_FETCH_WAIT_MAX`: the longest a consumer's fetch waits for events (default
    /// 25ms, at least 1ms). Kafka answers a fetch as soon as an event arrives, so there it
    /// only bounds idle polling; tansu holds every fetch for the whole window, so there it
    /// is each saga hop's added latency, traded against the broker's idle load.
    pub fetch_wait_max: Duration,
    /// `KAFKA_CONSUMER_BATCH`: the most events a consumer applies in one transaction
    /// (default 100, at least 1; see [`ConsumerRunner::batch`]). Only what has already been
    /// fetched is batched, so it costs no latency; under a backlog it saves a commit per event.
    pub consumer_batch: usize,
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
        let fetch_wait_max = vars.or("KAFKA_FETCH_WAIT_MAX", HumanDuration(DEFAULT_FETCH_WAIT_MAX))?.0;
        if fetch_wait_max < Duration::from_millis(1) {
            return Err(vars.invalid("KAFKA_FETCH_WAIT_MAX", "must be at least 1ms (0 makes consumers poll in a loop)"));
        }
        let consumer_batch: usize = vars.or("KAFKA_CONSUMER_BATCH", DEFAULT_CONSUMER_BATCH)?;
        if consumer_batch == 0 {
            return Err(vars.invalid("KAFKA_CONSUMER_BATCH", "must be at least 1 (1 applies each event on its own)"));
        }
        Ok(Self {
            brokers,
            topic_prefix: vars.raw("KAFKA_TOPIC_PREFIX").unwrap_or("").to_owned(),
            create_topics: vars.or("KAFKA_CREATE_TOPICS", false)?,
            fetch_wait_max,
            consumer_batch,
        })
    }

    /// A configuration for `brokers` with no prefix (tests, tools).
    pub fn for_brokers(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            topic_prefix: String::new(),
            create_topics: true,
            fetch_wait_max: DEFAULT_FETCH_WAIT_MAX,
            consumer_batch: DEFAULT_CONSUMER_BATCH,
        }
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
            // Back within a second of a broker restart (librdkafka waits up to 10 s by default).
            .set("reconnect.backoff.max.ms", "1000")
            .create()
            .context("cannot create the Kafka producer")
    }

    /// A consumer in `group` that commits offsets only when told to.
    pub fn consumer(&self, group: &str) -> anyhow::Result<StreamConsumer> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            // An offset becomes committable only once its event is applied (the runner stores
            // it then). librdkafka's default stores it when the event is handed out, and an
            // asynchronous commit sends whatever is stored when librdkafka gets to it, which
            // can be after the next batch was handed out: a crash then lost that batch.
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("enable.partition.eof", "false")
            // A fetch returns as soon as one event is there, or after this window: a saga step
            // waits for its event, not for librdkafka's default 500 ms window (some brokers,
            // tansu among them, hold a fetch for the whole window).
            .set("fetch.wait.max.ms", self.fetch_wait_max.as_millis().min(300_000).to_string())
            .set("reconnect.backoff.max.ms", "1000")
            .create()
            .context("cannot create the Kafka consumer")
    }
}

/// Creates `topics` (full names) and their `.dlq` twins if they do not exist (development
/// and tests; clusters declare them as Strimzi KafkaTopic resources).
///
/// On most starts they all exist already: a metadata request per topic finds that out and
/// nothing is created. The admin client is dropped off the async threads without waiting: its
/// drop joins a polling thread that wakes every 100 ms, which was most of a service's start-up.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[&str], partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .context("cannot create a Kafka admin client")?;
    let admin = Arc::new(admin);
    let started = std::time::Instant::now();
    let result = create_missing(&admin, topics, partitions).await;
    tokio::task::spawn_blocking(move || drop(admin));
    if let Ok(created) = &result {
        tracing::info!(duration_ms = started.elapsed().as_millis() as u64, created, "kafka topics ready");
    }
    result.map(drop)
}

/// Returns how many topics it created.
async fn create_missing(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    topics: &[&str],
    partitions: i32,
) -> anyhow::Result<usize> {
    let names: Vec<String> = topics.iter().flat_map(|topic| [(*topic).to_owned(), format!("{topic}.dlq")]).collect();
    let missing = {
        let admin = Arc::clone(admin);
        let names = names.clone();
        tokio::task::spawn_blocking(move || {
            names
                .into_iter()
                .filter(|name| {
                    // A topic the broker does not know comes back with an error and no partitions.
                    admin.inner().fetch_metadata(Some(name), Duration::from_secs(5)).map_or(true, |metadata| {
                        metadata.topics().iter().all(|topic| topic.error().is_some() || topic.partitions().is_empty())
                    })
                })
                .collect::<Vec<_>>()
        })
        .await
        .context("the topic check did not finish")?
    };
    if missing.is_empty() {
        return Ok(0);
    }
    let new: Vec<NewTopic<'_>> =
        missing.iter().map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(1))).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(new.iter(), &options).await.context("cannot create topics")? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(missing.len())
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

/// An event with the trace context of the span that enqueues it: what one outbox row holds.
pub struct Traced<'a> {
    event: &'a Event,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl<'a> Traced<'a> {
    /// `event` under the current span's trace context.
    pub fn current(event: &'a Event) -> Self {
        let mut trace = HashMap::new();
        let context = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut MapInjector(&mut trace))
        });
        Self { event, traceparent: trace.remove("traceparent"), tracestate: trace.remove("tracestate") }
    }

    /// Binds the eight values of [`outbox_insert`], in its order.
    pub fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(self.event.id)
            .bind(&self.event.topic)
            .bind(&self.event.key)
            .bind(&self.event.ce_type)
            .bind(&self.event.source)
            .bind(&self.event.payload)
            .bind(self.traceparent.as_deref())
            .bind(self.tracestate.as_deref())
    }
}

/// The statement that writes one outbox row, its eight parameters numbered from `$first`
/// (bind them with [`Traced::bind`]). A service that stores its state change and the event
/// in one statement uses it as a data-modifying CTE next to its own writes, and ends the
/// statement with [`WAKE_RELAY`]: one round trip to Postgres for the whole change.
pub fn outbox_insert(first: usize) -> String {
    let parameters: Vec<String> = (first..first + 8).map(|n| format!("${n}")).collect();
    format!(
        "INSERT INTO outbox (id, topic, key, ce_type, ce_source, payload, traceparent, tracestate) VALUES ({})",
        parameters.join(", ")
    )
}

/// The final `SELECT` of a statement that wrote outbox rows: wakes the relays when it commits.
pub const WAKE_RELAY: &str = "SELECT pg_notify('shop_outbox', '')";

/// Writes `event` into the outbox within the caller's transaction, with the current trace
/// context, and wakes the relay when the transaction commits (one statement).
pub async fn enqueue(connection: &mut PgConnection, event: &Event) -> Result<(), sqlx::Error> {
    static SQL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("WITH event AS ({}) {WAKE_RELAY}", outbox_insert(1)));
    let traced = Traced::current(event);
    traced.bind(sqlx::query(SQL.as_str())).execute(connection).await?;
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

/// The service's one idempotent producer, shared by the outbox relay, the consumers' dead
/// letters and the readiness check (cloning shares it): one librdkafka client per service
/// instead of one per use, so fewer threads, broker connections and buffers (each client
/// runs its own threads and holds its own buffers).
///
/// It replaces its producer once the broker will never take another record from it.
/// Retrying with such a producer would stall what it publishes for good (the outbox, the dead
/// letters); a new one gets a new producer id, and the records the old one failed on are sent
/// again (consumers dedupe by `ce_id`).
///
/// Two signs: librdkafka raises a fatal error, or a delivery fails with an error about the
/// producer's identity (fenced, unknown id, stale epoch, sequence out of order). tansu 0.6
/// answers every send of a producer that lived through a broker outage with `ProducerFenced`
/// as a per-record error, which librdkafka does not treat as fatal (seen in the bench's
/// broker-outage run: the order relay retried 3,300 times and published nothing).
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<PublisherInner>,
}

struct PublisherInner {
    kafka: KafkaConfig,
    producer: std::sync::RwLock<FutureProducer>,
}

impl Publisher {
    /// A producer for `kafka`'s brokers (it connects in the background).
    pub fn new(kafka: &KafkaConfig) -> anyhow::Result<Self> {
        let inner = PublisherInner { kafka: kafka.clone(), producer: std::sync::RwLock::new(kafka.producer()?) };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The producer to send with (a new one if the current one hit a fatal error).
    pub fn current(&self) -> anyhow::Result<FutureProducer> {
        let current = self.inner.producer.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        match rdkafka::producer::Producer::client(&current).fatal_error() {
            None => Ok(current),
            Some((code, reason)) => self.replace(&current, &format!("fatal error {code:?}: {reason}")),
        }
    }

    /// Called with a failed delivery of `producer`: replaces it if the error says the broker
    /// is done with it.
    fn failed(&self, producer: &FutureProducer, error: &rdkafka::error::KafkaError) {
        if error.rdkafka_error_code().is_some_and(ends_a_producer) {
            let _ = self.replace(producer, &error.to_string());
        }
    }

    /// Replaces `old` with a new producer, unless another caller already has.
    fn replace(&self, old: &FutureProducer, reason: &str) -> anyhow::Result<FutureProducer> {
        let mut slot = self.inner.producer.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let same = std::ptr::eq(
            rdkafka::producer::Producer::client(&*slot).native_ptr(),
            rdkafka::producer::Producer::client(old).native_ptr(),
        );
        if !same {
            return Ok(slot.clone());
        }
        tracing::warn!(reason, "the broker refuses this producer for good; replacing it");
        let fresh = self.inner.kafka.producer()?;
        *slot = fresh.clone();
        metrics::counter!("kafka_producer_replaced_total").increment(1);
        Ok(fresh)
    }
}

/// Errors after which the broker takes no more records from a producer: its id or epoch is
/// no longer the broker's, or its sequence state is lost.
fn ends_a_producer(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::InvalidProducerIdMapping
            | RDKafkaErrorCode::UnknownProducerId
            | RDKafkaErrorCode::OutOfOrderSequenceNumber
    )
}

/// Publishes the outbox.
pub struct Relay {
    pool: PgPool,
    publisher: Publisher,
    batch_size: i64,
    poll_interval: Duration,
}

impl Relay {
    /// A relay of `pool`'s outbox that sends with `publisher`.
    pub fn new(pool: PgPool, publisher: &Publisher) -> Self {
        Self { pool, publisher: publisher.clone(), batch_size: 500, poll_interval: Duration::from_secs(1) }
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
        let mut backlog_recorded: Option<std::time::Instant> = None;
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
            // At most once a second: it is two more statements on every wake under load.
            if backlog_recorded.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                backlog_recorded = Some(std::time::Instant::now());
                self.record_backlog().await;
            }
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
        let producer = self.publisher.current()?;
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
                producer.send(record, Duration::from_secs(5))
            })
            .collect();
        for (row, delivery) in rows.iter().zip(futures::future::join_all(deliveries).await) {
            if let Err((error, _)) = delivery {
                // Nothing is marked: the batch is published again later; consumers dedupe.
                self.publisher.failed(&producer, &error);
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

/// A consumed event and the span it is applied under (which continues the producer's
/// trace, so the events its handler enqueues continue it too).
pub struct Delivery {
    pub event: Incoming,
    pub span: tracing::Span,
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

impl Outcome {
    /// The `outcome` label of `events_consumed_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "Applied",
            Self::Duplicate => "Duplicate",
            Self::DeadLettered => "DeadLettered",
        }
    }
}

/// How often the runner checks that its group is not stuck (see [`ConsumerRunner::run`]).
const WATCHDOG_INTERVAL: Duration = Duration::from_secs(10);

/// Runs a handler over topics in a consumer group.
pub struct ConsumerRunner<A> {
    name: String,
    config: KafkaConfig,
    topics: Vec<String>,
    consumer: Arc<StreamConsumer>,
    /// For dead letters.
    publisher: Publisher,
    apply: Arc<A>,
    max_attempts: u32,
    retry_base: Duration,
    max_batch: usize,
}

/// What the watchdog compares between two checks: whether this member received an event
/// since the check before, whether events wait beyond the group's committed offsets, and
/// those offsets.
#[derive(Debug, PartialEq, Eq)]
struct GroupProgress {
    received: bool,
    waiting: bool,
    committed: Vec<(String, i32, i64)>,
}

impl GroupProgress {
    /// Blocking broker calls: run off the async threads. `None` if the broker did not answer.
    fn read(consumer: &StreamConsumer, topics: &[String], received: bool) -> Option<Self> {
        let timeout = Duration::from_secs(5);
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
        Some(Self { received, waiting, committed: offsets })
    }

    /// Stuck: at this check and the one `before`, nothing received here, events waiting, and
    /// not one committed offset moved.
    fn stuck_since(&self, before: Option<&Self>) -> bool {
        let idle = |progress: &Self| !progress.received && progress.waiting;
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

    /// Applies `deliveries` in order, answering one outcome each. An error means the runner
    /// applies every one of them again, one at a time with [`ApplyOnce::apply`]: what was
    /// applied before the error must then come back as [`Outcome::Duplicate`], never twice.
    ///
    /// The default applies them one after another (those before a failure stay applied);
    /// [`PgInbox`] applies them all in one transaction, or none.
    fn apply_batch<'a>(
        &'a self,
        consumer: &'a str,
        deliveries: &'a [Delivery],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, ApplyError>> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                outcomes.push(self.apply(consumer, &delivery.event).instrument(delivery.span.clone()).await?);
            }
            Ok(outcomes)
        })
    }
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

    /// One transaction: every inbox row in one statement, each new event's effect under its
    /// own span, one commit. A failure rolls all of it back.
    fn apply_batch<'a>(
        &'a self,
        consumer: &'a str,
        deliveries: &'a [Delivery],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, ApplyError>> {
        Box::pin(async move {
            let infrastructure = |error: sqlx::Error| ApplyError::Infrastructure(error.into());
            let mut transaction = self.pool.begin().await.map_err(infrastructure)?;
            let ids: Vec<Uuid> = deliveries.iter().map(|delivery| delivery.event.ce_id).collect();
            // A ce_id twice in one batch (a redriven dead letter next to its original) is
            // inserted once: the second copy finds the first and is a duplicate.
            let mut fresh: HashSet<Uuid> = sqlx::query_scalar(
                "INSERT INTO inbox (consumer, ce_id) SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING RETURNING ce_id",
            )
            .bind(consumer)
            .bind(&ids)
            .fetch_all(&mut *transaction)
            .await
            .map_err(infrastructure)?
            .into_iter()
            .collect();
            let mut outcomes = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                if fresh.remove(&delivery.event.ce_id) {
                    self.handler
                        .handle(&mut transaction, &delivery.event)
                        .instrument(delivery.span.clone())
                        .await
                        .map_err(ApplyError::Handler)?;
                    outcomes.push(Outcome::Applied);
                } else {
                    outcomes.push(Outcome::Duplicate);
                }
            }
            transaction.commit().await.map_err(infrastructure)?;
            for (delivery, outcome) in deliveries.iter().zip(&outcomes) {
                if *outcome == Outcome::Applied {
                    self.handler.after_commit(&delivery.event).instrument(delivery.span.clone()).await;
                }
            }
            Ok(outcomes)
        })
    }
}

impl<H: Handler> ConsumerRunner<PgInbox<H>> {
    /// `name` is the consumer group and the inbox's consumer name (the service's name);
    /// dead letters go out through `publisher`.
    pub fn new(
        config: &KafkaConfig,
        publisher: &Publisher,
        name: &str,
        topics: &[&str],
        pool: PgPool,
        handler: H,
    ) -> anyhow::Result<Self> {
        Self::with(config, publisher, name, topics, PgInbox { pool, handler })
    }
}

impl<A: ApplyOnce> ConsumerRunner<A> {
    /// A runner whose exactly-once step is `apply` (a service without Postgres).
    pub fn with(
        config: &KafkaConfig,
        publisher: &Publisher,
        name: &str,
        topics: &[&str],
        apply: A,
    ) -> anyhow::Result<Self> {
        let consumer = config.consumer(name)?;
        consumer.subscribe(topics).context("cannot subscribe")?;
        Ok(Self {
            name: name.to_owned(),
            config: config.clone(),
            topics: topics.iter().map(|topic| (*topic).to_owned()).collect(),
            consumer: Arc::new(consumer),
            publisher: publisher.clone(),
            apply: Arc::new(apply),
            max_attempts: 5,
            retry_base: Duration::from_millis(100),
            max_batch: 1,
        })
    }

    /// Applies up to `max` events at a time (default 1): after each receive, the events the
    /// client has already fetched are taken too, without waiting for more, and applied with
    /// [`ApplyOnce::apply_batch`] (for [`PgInbox`], one transaction and one commit). Under a
    /// backlog that is one WAL flush per batch instead of one per event; when events come
    /// one at a time it changes nothing. A failed batch is applied again one event at a time.
    ///
    /// Only for handlers whose events may share a transaction: one that locks several rows
    /// in a fixed order to avoid deadlocks (product's stock) would lock them out of order
    /// across the events of a batch.
    #[must_use]
    pub fn batch(mut self, max: usize) -> Self {
        self.max_batch = max.max(1);
        self
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
    /// A watchdog rejoins the group under a new member id when the group is stuck: for two
    /// checks in a row (10 s apart), this member received nothing while events waited on its
    /// topics and no member's committed offset moved. A broker can leave a group in a state
    /// where some partition is fetched by nobody: formed with an empty assignment (tansu 0.6
    /// does when a follower's SyncGroup races the eviction of a leader that was SIGKILLed),
    /// or with a partition assigned to a member that is gone; nothing else would ever unstick
    /// it. The checks run only while this member waits for events, so a member busy with one
    /// (a long retry, a database outage) never rejoins on account of itself; a rejoin while
    /// another member is slow costs a rebalance, and the inbox absorbs any redelivery.
    pub async fn run(mut self, shutdown: CancellationToken) {
        // Measured on the first message, then every 5 s at most.
        let mut lag_measured: Option<std::time::Instant> = None;
        let mut watchdog = tokio::time::interval(WATCHDOG_INTERVAL);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stalled: Option<GroupProgress> = None;
        let mut received_since_check = false;
        // Offsets are committed a few times a second, not per event: a commit is a write on
        // the broker, and per event they were most of its load. What a crash leaves
        // uncommitted is redelivered and skipped by the inbox.
        let mut commit = tokio::time::interval(COMMIT_INTERVAL);
        commit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut uncommitted = false;
        loop {
            let consumer = Arc::clone(&self.consumer);
            let message = tokio::select! {
                () = shutdown.cancelled() => {
                    // Leave with every processed event's offset stored.
                    if uncommitted {
                        let _ = tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync)).await;
                    }
                    return;
                }
                _ = watchdog.tick() => {
                    stalled = self.watch(stalled, std::mem::take(&mut received_since_check)).await;
                    continue;
                }
                _ = commit.tick(), if uncommitted => {
                    // The stored offsets: one past the last event applied in each partition.
                    if let Err(error) = consumer.commit_consumer_state(CommitMode::Async) {
                        tracing::warn!(consumer = %self.name, %error, "cannot commit offsets; retrying");
                    } else {
                        uncommitted = false;
                    }
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
            // What the client has fetched already comes along, up to the batch size; waiting
            // for more would only add latency.
            let mut messages = vec![message];
            while messages.len() < self.max_batch {
                match consumer.recv().now_or_never() {
                    Some(Ok(next)) => messages.push(next),
                    Some(Err(_)) | None => break,
                }
            }
            for outcome in self.process_all(&messages).await {
                metrics::counter!("events_consumed_total", "consumer" => self.name.clone(), "outcome" => outcome.as_str())
                    .increment(1);
            }
            // The effects (or dead letters) are durable: their offsets may be committed at the
            // next tick, and only theirs.
            for message in &messages {
                if let Err(error) = consumer.store_offset_from_message(message) {
                    // The partition was revoked meanwhile: its new owner gets the event again
                    // and the inbox skips it.
                    tracing::debug!(consumer = %self.name, %error, "cannot store an applied offset");
                }
            }
            uncommitted = true;
            received_since_check = true;
            if lag_measured.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
                lag_measured = Some(std::time::Instant::now());
                if let Some(last) = messages.last() {
                    self.record_lag(last.topic().to_owned(), last.partition(), last.offset());
                }
            }
        }
    }

    /// Applies `messages` (in the order received): as one batch when there are several and
    /// it commits, otherwise one at a time.
    async fn process_all(&self, messages: &[BorrowedMessage<'_>]) -> Vec<Outcome> {
        if messages.len() > 1
            && let Some(outcomes) = self.process_batch(messages).await
        {
            return outcomes;
        }
        let mut outcomes = Vec::with_capacity(messages.len());
        for message in messages {
            outcomes.push(self.process(message).await);
        }
        outcomes
    }

    /// `None` when the batch did not apply as a whole: an unreadable message (it goes to the
    /// DLQ on its own), a handler's refusal, or the database; the caller then applies each.
    async fn process_batch(&self, messages: &[BorrowedMessage<'_>]) -> Option<Vec<Outcome>> {
        let mut deliveries = Vec::with_capacity(messages.len());
        for message in messages {
            let headers = headers_of(message);
            let event = parse(message, &headers).ok()?;
            let span = self.span_for(message, &headers);
            span.record("ce_type", event.ce_type.as_str());
            deliveries.push(Delivery { event, span });
        }
        match self.apply.apply_batch(&self.name, &deliveries).await {
            Ok(outcomes) if outcomes.len() == deliveries.len() => {
                metrics::histogram!("kafka_consumer_batch_events", "consumer" => self.name.clone())
                    .record(deliveries.len() as f64);
                Some(outcomes)
            }
            Ok(_) => None,
            Err(
                ApplyError::Infrastructure(error)
                | ApplyError::Handler(HandleError::Retryable(error) | HandleError::Permanent(error)),
            ) => {
                tracing::info!(consumer = %self.name, events = deliveries.len(), error = format!("{error:#}"),
                    "a batch did not apply; applying its events one at a time");
                None
            }
        }
    }

    /// The span an event is applied under: a child of the producer's trace context.
    fn span_for(&self, message: &BorrowedMessage<'_>, headers: &HashMap<String, String>) -> tracing::Span {
        let span = tracing::info_span!("consume", messaging.destination = message.topic(), ce_type = tracing::field::Empty,
            consumer = %self.name, otel.kind = "consumer");
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderMapExtractor(headers))
        });
        let _ = span.set_parent(parent);
        span
    }

    /// One watchdog check; returns the progress to compare with at the next one.
    async fn watch(&mut self, before: Option<GroupProgress>, received: bool) -> Option<GroupProgress> {
        let consumer = Arc::clone(&self.consumer);
        let topics = self.topics.clone();
        let now =
            tokio::task::spawn_blocking(move || GroupProgress::read(&consumer, &topics, received)).await.ok().flatten();
        tracing::debug!(consumer = %self.name, progress = ?now, "watchdog check");
        let now = now?;
        if !now.stuck_since(before.as_ref()) {
            return Some(now);
        }
        tracing::warn!(consumer = %self.name, committed = ?now.committed,
            "the group is stuck (nothing received here, events waiting, no progress); rejoining");
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
        let span = self.span_for(message, &headers);
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
            let producer = match self.publisher.current() {
                Ok(producer) => producer,
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), dlq = %topic, "no producer for the DLQ; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            match producer.send(record, Duration::from_secs(5)).await {
                Ok(_) => return Outcome::DeadLettered,
                Err((error, _)) => {
                    self.publisher.failed(&producer, &error);
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
        let progress = |received: bool, waiting: bool, offset: i64| GroupProgress {
            received,
            waiting,
            committed: vec![("shop.order.v1".into(), 0, offset), ("shop.order.v1".into(), 1, 7)],
        };
        let stuck = progress(false, true, 3);
        assert!(stuck.stuck_since(Some(&progress(false, true, 3))), "idle, waiting, frozen: stuck");
        assert!(!stuck.stuck_since(None), "one check is not enough");
        assert!(!stuck.stuck_since(Some(&progress(false, true, 2))), "some member made progress");
        assert!(!stuck.stuck_since(Some(&progress(true, true, 3))), "this member received events before");
        assert!(!progress(true, true, 3).stuck_since(Some(&stuck)), "this member receives events now");
        assert!(!progress(false, false, 3).stuck_since(Some(&progress(false, false, 3))), "nothing waits");
    }

    #[test]
    fn only_errors_about_the_producers_identity_retire_it() {
        for code in [
            RDKafkaErrorCode::ProducerFenced,
            RDKafkaErrorCode::Fenced,
            RDKafkaErrorCode::InvalidProducerEpoch,
            RDKafkaErrorCode::UnknownProducerId,
            RDKafkaErrorCode::OutOfOrderSequenceNumber,
        ] {
            assert!(ends_a_producer(code), "{code:?} retires the producer");
        }
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::NotLeaderForPartition,
        ] {
            assert!(!ends_a_producer(code), "{code:?} is retried with the same producer");
        }
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
        let wait = |value: &str| {
            KafkaConfig::from_vars(&Vars::default().with("KAFKA_FETCH_WAIT_MAX", value)).map(|c| c.fetch_wait_max)
        };
        assert_eq!(wait("5ms").ok(), Some(Duration::from_millis(5)));
        assert!(wait("0ms").is_err() && wait("soon").is_err(), "0 and nonsense are refused");
        let batch = |value: &str| {
            KafkaConfig::from_vars(&Vars::default().with("KAFKA_CONSUMER_BATCH", value)).map(|c| c.consumer_batch)
        };
        assert_eq!(batch("1").ok(), Some(1));
        assert_eq!(KafkaConfig::from_vars(&Vars::default()).map(|c| c.consumer_batch).ok(), Some(100));
        assert!(batch("0").is_err() && batch("-3").is_err() && batch("many").is_err(), "0 and nonsense are refused");
    }

    #[test]
    fn the_outbox_insert_numbers_its_parameters_and_wakes_the_channel_the_relay_listens_on() {
        assert!(
            outbox_insert(15).ends_with("VALUES ($15, $16, $17, $18, $19, $20, $21, $22)"),
            "{}",
            outbox_insert(15)
        );
        assert!(WAKE_RELAY.contains(&format!("'{CHANNEL}'")));
    }
}
