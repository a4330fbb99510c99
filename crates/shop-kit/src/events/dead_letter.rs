//! Dead letters: a message that cannot be applied goes to `<topic>.dlq` with the reason
//! in its headers, never dropped.

use std::{collections::HashMap, time::Duration};

use rdkafka::{
    Message as _,
    message::{BorrowedMessage, Header, OwnedHeaders},
    producer::FutureRecord,
};

use super::{ApplyOnce, ConsumerRunner, Outcome};

impl<A: ApplyOnce> ConsumerRunner<A> {
    /// Publishes the message to `<topic>.dlq` with the error; retries until it is stored.
    pub(super) async fn dead_letter(
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
