//! The outbox relay: publishes what the services' transactions wrote to the outbox.

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::FutureRecord,
};
use sqlx::{PgPool, postgres::PgListener};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Publisher, backoff, outbox::CHANNEL};
use crate::telemetry::StoredContext;

/// How long the batch in hand may still take once the service stops. Past it the batch is
/// abandoned: its transaction rolls back and its rows stay pending, to be published after a
/// restart (consumers skip any duplicate by `ce_id`).
const FINISH_BATCH: Duration = Duration::from_secs(3);

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

    /// Publishes until `shutdown`, then returns after the batch in hand, or abandons it
    /// after [`FINISH_BATCH`] (with the broker away, deliveries wait `message.timeout.ms`).
    /// The service flushes the shared producer afterwards.
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
            let pending = tokio::select! {
                pending = self.publish_pending() => pending,
                () = async {
                    shutdown.cancelled().await;
                    tokio::time::sleep(FINISH_BATCH).await;
                } => {
                    tracing::warn!("stopping: outbox relay abandoned the batch in hand; its rows stay pending");
                    return;
                }
            };
            if shutdown.is_cancelled() {
                tracing::info!("stopping: outbox relay stopped");
                return;
            }
            match pending {
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
                () = shutdown.cancelled() => {
                    tracing::info!("stopping: outbox relay stopped");
                    return;
                }
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
        // One producer span per event, a child of the span that enqueued it; the record
        // carries the producer span's context, so the consumer's span is its child. The
        // spans end once the broker has answered.
        let spans: Vec<tracing::Span> = rows
            .iter()
            .map(|row| {
                let span = tracing::info_span!("publish", messaging.destination = %row.topic,
                    ce_type = %row.ce_type, otel.kind = "producer", otel.status_code = tracing::field::Empty,
                    otel.status_message = tracing::field::Empty);
                StoredContext { traceparent: row.traceparent.clone(), tracestate: row.tracestate.clone() }
                    .continue_in(&span);
                span
            })
            .collect();
        // Queue every record first (the producer keeps their order per partition), then wait.
        let deliveries: Vec<_> = rows
            .iter()
            .zip(&spans)
            .map(|(row, span)| {
                let id = row.id.to_string();
                let time = row.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let mut headers = OwnedHeaders::new_with_capacity(8)
                    .insert(Header { key: "ce_specversion", value: Some("1.0") })
                    .insert(Header { key: "ce_id", value: Some(id.as_str()) })
                    .insert(Header { key: "ce_source", value: Some(row.ce_source.as_str()) })
                    .insert(Header { key: "ce_type", value: Some(row.ce_type.as_str()) })
                    .insert(Header { key: "ce_time", value: Some(time.as_str()) })
                    .insert(Header { key: "content-type", value: Some("application/protobuf") });
                let trace = span.in_scope(StoredContext::current);
                if let Some(traceparent) = trace.traceparent.as_ref().or(row.traceparent.as_ref()) {
                    headers = headers.insert(Header { key: "traceparent", value: Some(traceparent.as_str()) });
                }
                if let Some(tracestate) = trace.tracestate.as_ref().or(row.tracestate.as_ref()) {
                    headers = headers.insert(Header { key: "tracestate", value: Some(tracestate.as_str()) });
                }
                let record = FutureRecord::to(&row.topic).key(&row.key).payload(&row.payload).headers(headers);
                producer.send(record, Duration::from_secs(5))
            })
            .collect();
        let delivered = futures::future::join_all(deliveries).await;
        // A failed delivery is an error span in the trace, as well as the log line below.
        for (span, delivery) in spans.iter().zip(&delivered) {
            if let Err((error, _)) = delivery {
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_message", error.to_string().as_str());
            }
        }
        drop(spans);
        for (row, delivery) in rows.iter().zip(delivered) {
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
