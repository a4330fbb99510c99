//! `cargo xtask dlq list <topic>` prints the dead letters of `<topic>` (from `<topic>.dlq`):
//! key, event type and id, the consumer that gave up, and its error.
//! `cargo xtask dlq redrive <topic>` publishes each dead letter back to `<topic>` (without
//! the `dlq_*` headers, keeping its `ce_id`, so consumers that did apply it skip it) and
//! commits its progress in the `shop-dlq-redrive` group, so a letter is redriven once.
//! The broker is `KAFKA_BROKERS` (default 127.0.0.1:9092).

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::{
    ClientConfig, Message as _,
    consumer::{CommitMode, Consumer as _, StreamConsumer},
    message::{Header, Headers as _, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

/// How long to wait for one more letter before deciding the DLQ is drained.
const IDLE: Duration = Duration::from_secs(3);

/// What to do with a topic's dead letters.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Action {
    /// Print each dead letter of <TOPIC>: key, event type and id, the consumer that gave up,
    /// and its error.
    List {
        /// The topic whose dead letters to read (`<topic>.dlq`; a trailing `.dlq` is ignored).
        topic: String,
    },
    /// Publish each dead letter back to <TOPIC>, once.
    ///
    /// Each letter goes back without its `dlq_*` headers and keeps its `ce_id`, so consumers
    /// that did apply it skip it; the progress is committed in the `shop-dlq-redrive` group.
    Redrive {
        /// The topic to replay into (its dead letters are `<topic>.dlq`; a trailing `.dlq` is
        /// ignored).
        topic: String,
    },
}

pub(crate) fn run(action: Action) -> anyhow::Result<()> {
    let brokers = crate::infra::brokers();
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start a runtime")?;
    runtime.block_on(async move {
        match action {
            Action::List { topic } => list(&brokers, topic.trim_end_matches(".dlq")).await,
            Action::Redrive { topic } => redrive(&brokers, topic.trim_end_matches(".dlq")).await,
        }
    })
}

fn consumer(brokers: &str, group: &str) -> anyhow::Result<StreamConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("cannot create a Kafka consumer")
}

fn header<'a>(message: &'a rdkafka::message::BorrowedMessage<'_>, key: &str) -> &'a str {
    message
        .headers()
        .and_then(|headers| headers.iter().find(|header| header.key == key))
        .and_then(|header| header.value)
        .and_then(|value| std::str::from_utf8(value).ok())
        .unwrap_or("-")
}

async fn list(brokers: &str, topic: &str) -> anyhow::Result<()> {
    let dlq = format!("{topic}.dlq");
    let consumer = consumer(brokers, &format!("shop-dlq-list-{}", std::process::id()))?;
    consumer.subscribe(&[&dlq]).context("cannot subscribe")?;
    let mut count = 0;
    while let Ok(message) = tokio::time::timeout(IDLE, consumer.recv()).await {
        let message = message.context("cannot read the DLQ")?;
        count += 1;
        eprintln!(
            "{}/{} key={} type={} ce_id={} consumer={} error={}",
            message.partition(),
            message.offset(),
            message.key().map(String::from_utf8_lossy).unwrap_or_default(),
            header(&message, "ce_type"),
            header(&message, "ce_id"),
            header(&message, "dlq_consumer"),
            header(&message, "dlq_error"),
        );
    }
    eprintln!("{count} dead letter(s) in {dlq}");
    Ok(())
}

async fn redrive(brokers: &str, topic: &str) -> anyhow::Result<()> {
    let dlq = format!("{topic}.dlq");
    let consumer = consumer(brokers, "shop-dlq-redrive")?;
    consumer.subscribe(&[&dlq]).context("cannot subscribe")?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .context("cannot create a Kafka producer")?;
    let mut count = 0;
    while let Ok(message) = tokio::time::timeout(IDLE, consumer.recv()).await {
        let message = message.context("cannot read the DLQ")?;
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for entry in original.iter().filter(|entry| !entry.key.starts_with("dlq_")) {
                headers = headers.insert(Header { key: entry.key, value: entry.value });
            }
        }
        let mut record = FutureRecord::to(topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(error, _)| anyhow::anyhow!("cannot republish: {error}"))?;
        consumer.commit_message(&message, CommitMode::Sync).context("cannot record the redrive")?;
        count += 1;
    }
    eprintln!("redrove {count} dead letter(s) from {dlq} to {topic}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dead_letters_are_listed_and_redriven_once_without_their_dlq_headers() {
        let brokers = crate::infra::brokers();
        let topic = format!(
            "test.dlq.{}.{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
        );
        let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
        let names = [topic.clone(), format!("{topic}.dlq")];
        let new: Vec<_> = names
            .iter()
            .map(|name| rdkafka::admin::NewTopic::new(name, 1, rdkafka::admin::TopicReplication::Fixed(1)))
            .collect();
        admin.create_topics(new.iter(), &rdkafka::admin::AdminOptions::new()).await.unwrap();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "ce_id", value: Some("0192f7a0-0000-7000-8000-000000000001") })
            .insert(Header { key: "ce_type", value: Some("shop.order.v1.OrderPlaced") })
            .insert(Header { key: "dlq_error", value: Some("boom") });
        let dlq = format!("{topic}.dlq");
        producer
            .send(FutureRecord::to(&dlq).key("k").payload("p").headers(headers), Duration::from_secs(10))
            .await
            .unwrap();

        list(&brokers, &topic).await.unwrap();
        redrive(&brokers, &topic).await.unwrap();
        let reader = consumer(&brokers, &format!("reader-{}", std::process::id())).unwrap();
        reader.subscribe(&[&topic]).unwrap();
        let message = tokio::time::timeout(Duration::from_secs(30), reader.recv()).await.unwrap().unwrap();
        assert_eq!(header(&message, "ce_id"), "0192f7a0-0000-7000-8000-000000000001");
        assert_eq!(header(&message, "dlq_error"), "-", "dlq headers are dropped");
        assert_eq!(message.payload(), Some(&b"p"[..]));
        // A second redrive finds nothing new: the group remembers.
        redrive(&brokers, &topic).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_secs(2), reader.recv()).await.is_err(), "redriven once");
    }
}
