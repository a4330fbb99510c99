//! `cargo xtask dlq list <topic>` prints the dead letters of `<topic>` (from `<topic>.dlq`):
//! key, event type and id, the consumer that gave up, and its error.
//! `cargo xtask dlq redrive <topic>` publishes each dead letter back to `<topic>` (without
//! the `dlq_*` headers, keeping its `ce_id`, so consumers that did apply it skip it) and
//! commits its progress in the `shop-dlq-redrive` group, so a letter is redriven once. Only a
//! letter whose original is still on `<topic>` where its `dlq_partition`/`dlq_offset` say, with
//! the same `ce_id` and payload, goes back: a consumer may write dead letters (ADR 0013), and a
//! letter it made up would otherwise be republished as the topic owner's. The others are
//! listed as skipped.
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
    let (mut count, mut skipped) = (0, 0);
    while let Ok(message) = tokio::time::timeout(IDLE, consumer.recv()).await {
        let message = message.context("cannot read the DLQ")?;
        if !matches_original(brokers, topic, &message).await? {
            eprintln!(
                "skipped {} {}: its original is not at {topic} partition {} offset {} (a dead letter no consumer made from it, or past retention)",
                header(&message, "ce_type"),
                header(&message, "ce_id"),
                header(&message, "dlq_partition"),
                header(&message, "dlq_offset"),
            );
            consumer.commit_message(&message, CommitMode::Sync).context("cannot record the skip")?;
            skipped += 1;
            continue;
        }
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
    eprintln!("redrove {count} dead letter(s) from {dlq} to {topic}; skipped {skipped}");
    Ok(())
}

/// Whether `letter`'s original is on `topic` at its `dlq_partition` and `dlq_offset`, with the
/// same `ce_id` and payload.
async fn matches_original(
    brokers: &str,
    topic: &str,
    letter: &rdkafka::message::BorrowedMessage<'_>,
) -> anyhow::Result<bool> {
    let (Ok(partition), Ok(offset)) =
        (header(letter, "dlq_partition").parse::<i32>(), header(letter, "dlq_offset").parse::<i64>())
    else {
        return Ok(false);
    };
    let reader = consumer(brokers, "shop-dlq-verify")?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset))
        .context("cannot name the original")?;
    reader.assign(&assignment).context("cannot read the original")?;
    let Ok(Ok(original)) = tokio::time::timeout(IDLE, reader.recv()).await else { return Ok(false) };
    Ok(original.offset() == offset
        && original.partition() == partition
        && header(&original, "ce_id") == header(letter, "ce_id")
        && original.payload() == letter.payload())
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
        let event = |id: &'static str| {
            OwnedHeaders::new()
                .insert(Header { key: "ce_id", value: Some(id) })
                .insert(Header { key: "ce_type", value: Some("shop.order.v1.OrderPlaced") })
        };
        let (real, forged) = ("0192f7a0-0000-7000-8000-000000000001", "0192f7a0-0000-7000-8000-00000000000f");
        // The original, at partition 0 offset 0, and the dead letter a consumer made of it.
        producer
            .send(FutureRecord::to(&topic).key("k").payload("p").headers(event(real)), Duration::from_secs(10))
            .await
            .unwrap();
        let dead = |id, offset| {
            event(id)
                .insert(Header { key: "dlq_error", value: Some("boom") })
                .insert(Header { key: "dlq_partition", value: Some("0") })
                .insert(Header { key: "dlq_offset", value: Some(offset) })
        };
        let dlq = format!("{topic}.dlq");
        producer
            .send(FutureRecord::to(&dlq).key("k").payload("p").headers(dead(real, "0")), Duration::from_secs(10))
            .await
            .unwrap();
        // A letter with no such original (written straight to the DLQ) and one naming another
        // event's place: neither goes back.
        for (id, offset) in [(forged, "7"), (forged, "0")] {
            producer
                .send(FutureRecord::to(&dlq).key("k").payload("p").headers(dead(id, offset)), Duration::from_secs(10))
                .await
                .unwrap();
        }

        list(&brokers, &topic).await.unwrap();
        redrive(&brokers, &topic).await.unwrap();
        let reader = consumer(&brokers, &format!("reader-{}", std::process::id())).unwrap();
        reader.subscribe(&[&topic]).unwrap();
        let original = tokio::time::timeout(Duration::from_secs(30), reader.recv()).await.unwrap().unwrap();
        assert_eq!(original.offset(), 0);
        let message = tokio::time::timeout(Duration::from_secs(30), reader.recv()).await.unwrap().unwrap();
        assert_eq!(header(&message, "ce_id"), real);
        assert_eq!(header(&message, "dlq_error"), "-", "dlq headers are dropped");
        assert_eq!(message.payload(), Some(&b"p"[..]));
        // A second redrive finds nothing new: the group remembers.
        redrive(&brokers, &topic).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_secs(2), reader.recv()).await.is_err(), "redriven once");
    }
}
