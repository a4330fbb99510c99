//! The service's one producer.

use std::sync::Arc;

use rdkafka::{error::RDKafkaErrorCode, producer::FutureProducer};

use super::KafkaConfig;

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

    /// Waits up to `timeout` for the queued records to be delivered, on a blocking thread
    /// (librdkafka's flush blocks); `false` when some were not, or the flush did not return.
    pub async fn flush(&self, timeout: std::time::Duration) -> bool {
        let Ok(producer) = self.current() else { return false };
        let flushed =
            crate::service::blocking_within(timeout, move || rdkafka::producer::Producer::flush(&producer, timeout))
                .await;
        matches!(flushed, Some(Ok(())))
    }

    /// Called with a failed delivery of `producer`: replaces it if the error says the broker
    /// is done with it.
    pub(super) fn failed(&self, producer: &FutureProducer, error: &rdkafka::error::KafkaError) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
