//! Applying what a consumer received: decoding each message into the handler's types,
//! applying a batch in one transaction (or each event on its own when the batch does not
//! apply), retrying what may succeed later and dead-lettering what never will.

use std::{collections::HashMap, time::Duration};

use anyhow::Context as _;
use rdkafka::{
    Message as _,
    message::{BorrowedMessage, Headers as _},
};
use tracing::Instrument as _;
use uuid::Uuid;

use super::{ApplyError, ApplyOnce, ConsumerRunner, Consumes, Delivery, HandleError, Outcome, Received, backoff};

impl<A: ApplyOnce> ConsumerRunner<A> {
    /// Applies `messages` (in the order received): as one batch when there are several and
    /// it commits, otherwise one at a time.
    /// The outcomes of the events applied, in order; fewer than `messages` when the service
    /// stopped while one could not be applied (the rest are abandoned).
    pub(super) async fn process_all(&self, messages: &[BorrowedMessage<'_>]) -> Vec<Outcome> {
        if messages.len() > 1
            && let Some(outcomes) = self.process_batch(messages).await
        {
            return outcomes;
        }
        let mut outcomes = Vec::with_capacity(messages.len());
        for message in messages {
            match self.process(message).await {
                Some(outcome) => outcomes.push(outcome),
                None => break,
            }
        }
        outcomes
    }

    /// `None` when the batch did not apply as a whole: an unreadable message (it goes to the
    /// DLQ on its own), a handler's refusal, or the database; the caller then applies each.
    async fn process_batch(&self, messages: &[BorrowedMessage<'_>]) -> Option<Vec<Outcome>> {
        let mut deliveries = Vec::with_capacity(messages.len());
        // For each message, its delivery's index, or `None` for an ignored type.
        let mut slots = Vec::with_capacity(messages.len());
        for message in messages {
            let headers = headers_of(message);
            let Some(event) = receive::<A::Event>(message, &headers).ok()? else {
                slots.push(None);
                continue;
            };
            let span = self.span_for(message, &headers);
            span.record("ce_type", event.ce_type.as_str());
            slots.push(Some(deliveries.len()));
            deliveries.push(Delivery { event, span });
        }
        let applied = if deliveries.is_empty() {
            Vec::new()
        } else {
            match self.apply.apply_batch(&self.name, &deliveries).await {
                Ok(outcomes) if outcomes.len() == deliveries.len() => {
                    metrics::histogram!("kafka_consumer_batch_events", "consumer" => self.name.clone())
                        .record(deliveries.len() as f64);
                    outcomes
                }
                Ok(_) => return None,
                Err(
                    ApplyError::Infrastructure(error)
                    | ApplyError::Handler(HandleError::Retryable(error) | HandleError::Permanent(error)),
                ) => {
                    tracing::info!(consumer = %self.name, events = deliveries.len(), error = format!("{error:#}"),
                        "a batch did not apply; applying its events one at a time");
                    return None;
                }
            }
        };
        Some(slots.into_iter().map(|slot| slot.map_or(Outcome::Ignored, |index| applied[index])).collect())
    }

    /// The span an event is applied under: a child of the producer's trace context.
    fn span_for(&self, message: &BorrowedMessage<'_>, headers: &HashMap<String, String>) -> tracing::Span {
        let span = tracing::info_span!("consume", messaging.destination = message.topic(), ce_type = tracing::field::Empty,
            consumer = %self.name, otel.kind = "consumer");
        crate::telemetry::continue_from(&span, headers);
        span
    }

    /// `None` when the service stopped while the event could not be applied: it is abandoned.
    async fn process(&self, message: &BorrowedMessage<'_>) -> Option<Outcome> {
        let headers = headers_of(message);
        let span = self.span_for(message, &headers);
        async {
            let event = match receive::<A::Event>(message, &headers) {
                Ok(Some(event)) => event,
                Ok(None) => return Some(Outcome::Ignored),
                Err(error) => return Some(self.dead_letter(message, &headers, &format!("{error:#}")).await),
            };
            tracing::Span::current().record("ce_type", event.ce_type.as_str());
            let mut attempt = 0_u32;
            loop {
                attempt += 1;
                let pause = match self.apply.apply(&self.name, &event).await {
                    Ok(outcome) => return Some(outcome),
                    Err(ApplyError::Infrastructure(error)) => {
                        // Not the message's fault: wait for the database, however long (but
                        // not past a stop).
                        tracing::warn!(error = format!("{error:#}"), "cannot reach the database; retrying the event");
                        attempt = attempt.saturating_sub(1);
                        backoff(2, self.retry_base.max(Duration::from_millis(250)))
                    }
                    Err(ApplyError::Handler(HandleError::Permanent(error))) => {
                        return Some(self.dead_letter(message, &headers, &format!("{error:#}")).await);
                    }
                    Err(ApplyError::Handler(HandleError::Retryable(error))) if attempt >= self.max_attempts => {
                        return Some(
                            self.dead_letter(message, &headers, &format!("after {attempt} attempts: {error:#}")).await,
                        );
                    }
                    Err(ApplyError::Handler(HandleError::Retryable(error))) => {
                        tracing::info!(attempt, error = format!("{error:#}"), "event failed; retrying");
                        backoff(attempt, self.retry_base)
                    }
                };
                tokio::select! {
                    () = self.stop.cancelled() => {
                        tracing::warn!("stopping: the event is abandoned unapplied; it is redelivered after a restart");
                        return None;
                    }
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
        .instrument(span)
        .await
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

/// The message as the consumer's type: `None` for a type it ignores; an error (the reason
/// for the dead letter) for missing headers, an unhandled type, a payload that does not
/// decode, or a `ce_source` that is not the owner of the type's topic (only the owning service writes a topic: an event from anyone
/// else is not believed). Types the consumer ignores are skipped before these checks.
fn receive<E: Consumes>(
    message: &BorrowedMessage<'_>,
    headers: &HashMap<String, String>,
) -> anyhow::Result<Option<Received<E>>> {
    let ce_id = headers.get("ce_id").context("the message has no ce_id header")?;
    let ce_id = Uuid::parse_str(ce_id).context("the ce_id header is not a UUID")?;
    let ce_type = headers.get("ce_type").context("the message has no ce_type header")?.clone();
    let Some(decoded) = E::decode(&ce_type, message.payload().unwrap_or_default())? else {
        return Ok(None);
    };
    let owner = E::topics()
        .into_iter()
        .find(|topic| ce_type.strip_prefix(topic.name).is_some_and(|rest| rest.starts_with('.')))
        .context("the event's type names no topic this consumer reads")?;
    let source = headers.get("ce_source").map(String::as_str);
    if source != Some(owner.source) {
        anyhow::bail!(
            "ce_source {source:?} is not the owner of {} ({}): only the owning service writes a topic",
            owner.name,
            owner.source
        );
    }
    Ok(Some(Received {
        ce_id,
        ce_type,
        topic: message.topic().to_owned(),
        key: message.key().map(|key| String::from_utf8_lossy(key).into_owned()).unwrap_or_default(),
        message: decoded,
    }))
}
