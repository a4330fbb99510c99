//! The consumer runner: reads a group's topics, decodes each message into the handler's
//! types, applies it exactly once, and commits offsets only after the effect.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use futures::FutureExt as _;
use rdkafka::{
    Message as _,
    consumer::{CommitMode, Consumer as _, StreamConsumer},
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{
    ApplyOnce, Consumes, Handler, KafkaConfig, PgInbox, Publisher, Received,
    watchdog::{GroupProgress, WATCHDOG_INTERVAL},
};

/// How often a consumer commits the offsets of the events it has applied.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);

/// How long the batch in hand may still take once the service stops. Past it the batch is
/// abandoned: its transaction rolls back, its offsets are not stored, and the next owner of
/// its partitions gets it again.
const FINISH_BATCH: Duration = Duration::from_secs(5);

/// How long the last (synchronous) offset commit may take on the way out.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long closing the consumer may take. librdkafka's close leaves the group and waits
/// for the coordinator, without limit while the broker is away.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A consumed event and the span it is applied under (which continues the producer's
/// trace, so the events its handler enqueues continue it too).
pub struct Delivery<E> {
    pub event: Received<E>,
    pub span: tracing::Span,
}

/// What happened to one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Duplicate,
    /// A type the consumer knowingly ignores (named in its `consumes!` enum).
    Ignored,
    DeadLettered,
}

impl Outcome {
    /// The `outcome` label of `events_consumed_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

/// Runs a handler over its topics in a consumer group.
pub struct ConsumerRunner<A> {
    pub(super) name: String,
    pub(super) config: KafkaConfig,
    pub(super) topics: Vec<String>,
    pub(super) consumer: Arc<StreamConsumer>,
    /// For dead letters.
    pub(super) publisher: Publisher,
    pub(super) apply: Arc<A>,
    pub(super) max_attempts: u32,
    pub(super) retry_base: Duration,
    max_batch: usize,
    /// The service's stop signal, as `run` got it: retries stop waiting once it is cancelled.
    pub(super) stop: CancellationToken,
}

impl<H: Handler> ConsumerRunner<PgInbox<H>> {
    /// The consumer of `service` (its group and inbox name, with the environment's prefix),
    /// applying `handler`'s effects in `pool`; dead letters go out through `publisher`.
    pub fn new(
        config: &KafkaConfig,
        publisher: &Publisher,
        service: &str,
        pool: PgPool,
        handler: H,
    ) -> anyhow::Result<Self> {
        Self::with(config, publisher, service, PgInbox::new(pool, handler))
    }
}

impl<A: ApplyOnce> ConsumerRunner<A> {
    /// A runner whose exactly-once step is `apply` (a service without Postgres). It reads
    /// the topics of the types `A::Event` names.
    pub fn with(config: &KafkaConfig, publisher: &Publisher, service: &str, apply: A) -> anyhow::Result<Self> {
        let name = config.group(service);
        let topics: Vec<String> = A::Event::topics().into_iter().map(|topic| config.topics().name(topic)).collect();
        let consumer = config.consumer(&name)?;
        let subscribed: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&subscribed).context("cannot subscribe")?;
        Ok(Self {
            name,
            config: config.clone(),
            topics,
            consumer: Arc::new(consumer),
            publisher: publisher.clone(),
            apply: Arc::new(apply),
            max_attempts: 5,
            retry_base: Duration::from_millis(100),
            max_batch: 1,
            stop: CancellationToken::new(),
        })
    }

    /// The full names of the topics it reads.
    pub fn topics(&self) -> &[String] {
        &self.topics
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

    /// Consumes until `shutdown`, then stops: it fetches nothing more, finishes the batch in
    /// hand within [`FINISH_BATCH`] or abandons it (rolled back, not committed), commits the
    /// offsets of what it applied and closes the consumer, each step with its own timeout.
    /// A watchdog rejoins the group when the broker left it stuck (see the `watchdog` module).
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.stop = shutdown.clone();
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
                biased;
                () = shutdown.cancelled() => break,
                _ = watchdog.tick() => {
                    // Its broker calls can take seconds while the broker is away: a stop
                    // does not wait for them. A rejoin closes the old consumer off the async
                    // threads, which needs this loop's handle on it gone first.
                    drop(consumer);
                    let (before, received) = (stalled.take(), std::mem::take(&mut received_since_check));
                    tokio::select! {
                        checked = self.watch(before, received) => stalled = checked,
                        () = shutdown.cancelled() => break,
                    }
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
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
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
            // Once the service stops, the batch in hand gets FINISH_BATCH more; dropping it
            // then rolls its transaction back.
            let outcomes = tokio::select! {
                outcomes = self.process_all(&messages) => outcomes,
                () = async {
                    shutdown.cancelled().await;
                    tokio::time::sleep(FINISH_BATCH).await;
                } => Vec::new(),
            };
            for outcome in &outcomes {
                metrics::counter!("events_consumed_total", "consumer" => self.name.clone(), "outcome" => outcome.as_str())
                    .increment(1);
            }
            // The effects (or dead letters) are durable: their offsets may be committed at the
            // next tick, and only theirs (the events before the first one abandoned).
            for message in messages.iter().take(outcomes.len()) {
                if let Err(error) = consumer.store_offset_from_message(message) {
                    // The partition was revoked meanwhile: its new owner gets the event again
                    // and the inbox skips it.
                    tracing::debug!(consumer = %self.name, %error, "cannot store an applied offset");
                }
            }
            uncommitted |= !outcomes.is_empty();
            if outcomes.len() < messages.len() {
                tracing::warn!(consumer = %self.name, abandoned = messages.len() - outcomes.len(),
                    "stopping: abandoned the rest of the batch in hand; it is redelivered after a restart");
                break;
            }
            received_since_check = true;
            if lag_measured.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
                lag_measured = Some(std::time::Instant::now());
                if let Some(last) = messages.last() {
                    self.record_lag(last.topic().to_owned(), last.partition(), last.offset());
                }
            }
        }
        self.close(uncommitted).await;
    }

    /// The way out: commits the stored offsets (those of the events applied), then closes
    /// the consumer. Both block in librdkafka while the broker is away, so each runs on a
    /// blocking thread and is abandoned after its timeout.
    async fn close(self, uncommitted: bool) {
        let name = self.name;
        if uncommitted {
            let started = std::time::Instant::now();
            let consumer = Arc::clone(&self.consumer);
            let committed = crate::service::blocking_within(COMMIT_TIMEOUT, move || {
                consumer.commit_consumer_state(CommitMode::Sync)
            })
            .await;
            let took = started.elapsed();
            match committed {
                Some(Ok(())) => tracing::info!(consumer = %name, ?took, "stopping: offsets committed"),
                Some(Err(error)) => tracing::warn!(consumer = %name, ?took, %error,
                    "stopping: cannot commit offsets; the inbox skips what is redelivered"),
                None => tracing::warn!(consumer = %name, ?took,
                    "stopping: offset commit abandoned after its timeout; the inbox skips what is redelivered"),
            }
        }
        let started = std::time::Instant::now();
        let consumer = self.consumer;
        let closed = crate::service::blocking_within(CLOSE_TIMEOUT, move || drop(consumer)).await;
        let took = started.elapsed();
        match closed {
            Some(()) => tracing::info!(consumer = %name, ?took, "stopping: consumer closed"),
            None => tracing::warn!(consumer = %name, ?took, "stopping: consumer close abandoned after its timeout"),
        }
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
}
