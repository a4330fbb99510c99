//! Where the brokers are, how topics and groups are named, and topic creation for
//! development and tests.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::StreamConsumer,
    error::RDKafkaErrorCode,
    producer::FutureProducer,
};
use shop_proto::contracts::{EventContract, Topic};

use super::{Event, security::KafkaSecurity};
use crate::config::{ConfigError, HumanDuration, Vars};

/// `KAFKA_FETCH_WAIT_MAX`'s default.
const DEFAULT_FETCH_WAIT_MAX: Duration = Duration::from_millis(25);

/// `KAFKA_CONSUMER_BATCH`'s default.
const DEFAULT_CONSUMER_BATCH: usize = 100;

/// Where the brokers are, and how topics are named.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// `KAFKA_BROKERS`: comma-separated `host:port` (default `127.0.0.1:9092`).
    pub brokers: String,
    /// `KAFKA_TOPIC_PREFIX`: prepended to every topic and consumer group name (default
    /// none); tests use a unique one so that they never see each other's events.
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
    /// (default 100, at least 1; see [`super::ConsumerRunner::batch`]). Only what has already
    /// been fetched is batched, so it costs no latency; under a backlog it saves a commit per
    /// event.
    pub consumer_batch: usize,
    /// `KAFKA_SECURITY_PROTOCOL` and the rest: how the clients authenticate and check the
    /// brokers (see [`super::security`]).
    pub security: KafkaSecurity,
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
            security: KafkaSecurity::from_vars(vars)?,
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
            security: KafkaSecurity::default(),
        }
    }

    /// A client configuration for these brokers, with their security.
    pub fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        self.security.apply(&mut config);
        config
    }

    /// The full name of a topic: `<prefix><name>`.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }

    /// The consumer group (and inbox consumer name) of `service`: `<prefix><service>`.
    pub fn group(&self, service: &str) -> String {
        self.topic(service)
    }

    /// Names of the contracts' topics in this environment.
    pub fn topics(&self) -> Topics {
        Topics { prefix: self.topic_prefix.as_str().into() }
    }

    /// An idempotent producer: `acks=all`, ordered retries, no duplicates on retry.
    pub fn producer(&self) -> anyhow::Result<FutureProducer> {
        self.client()
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
        self.client()
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

/// The contracts' topic names in one environment (with its `KAFKA_TOPIC_PREFIX`); cloning
/// is cheap.
#[derive(Clone, Debug, Default)]
pub struct Topics {
    prefix: Arc<str>,
}

impl Topics {
    /// The full name of `topic`: `<prefix><name>`.
    pub fn name(&self, topic: Topic) -> String {
        format!("{}{}", self.prefix, topic.name)
    }

    /// An event carrying `message` on its contract's topic, keyed by its aggregate's id.
    pub fn event<M: EventContract>(&self, key: impl Into<String>, message: &M) -> Event {
        Event::of(self.name(M::TOPIC), key.into(), message)
    }
}

/// Creates `topics` (full names) and their `.dlq` twins if they do not exist (development
/// and tests; clusters declare them as Strimzi KafkaTopic resources).
///
/// On most starts they all exist already: a metadata request per topic finds that out and
/// nothing is created. The admin client is dropped off the async threads without waiting: its
/// drop joins a polling thread that wakes every 100 ms, which was most of a service's start-up.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[&str], partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        config.client().create().context("cannot create a Kafka admin client")?;
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

#[cfg(test)]
mod tests {
    use shop_proto::{contracts, shop::events::v1::UserRegistered};

    use super::*;

    #[test]
    fn settings_are_validated_and_names_carry_the_prefix() {
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

        let mut config = KafkaConfig::for_brokers("127.0.0.1:9092");
        config.topic_prefix = "t123.".into();
        assert_eq!(config.topics().name(contracts::ORDER), "t123.shop.order.v1");
        assert_eq!(config.group("order-service"), "t123.order-service");
        let event = config.topics().event("k", &UserRegistered::default());
        assert_eq!(event.topic, "t123.shop.user.v1");
        assert_eq!(event.ce_type, "shop.user.v1.UserRegistered", "the prefix never leaks into the type");
        assert_eq!(event.source, "/shop/user", "the source is the topic's owner");
    }
}
