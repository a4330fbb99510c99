//! The Kafka clients' security settings (ADR 0013) against what the local broker supports:
//! tansu's `--authentication` with SCRAM-SHA-512 users (Strimzi's mechanism; every client must
//! complete SASL before anything else), and TLS served by a proxy in front of tansu with a
//! certificate from a CA made in the test (tansu 0.6 has no TLS listener of its own). tansu
//! 0.6 admits a SCRAM client that does not abort even with a wrong password (fixed upstream
//! after 0.6), so a wrong password is not among the cases: what is tested is that the clients
//! authenticate as configured, and that one that does not is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly on purpose")]

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use shop_kit::{
    config::Vars,
    events::{KafkaConfig, ensure_topics},
};
use shop_testkit::{TestBroker, tls::LocalhostCertificate};

fn config(broker: &str, prefix: &str, pairs: &[(&str, &str)]) -> KafkaConfig {
    let vars = Vars::from_pairs(pairs.iter().copied())
        .with("KAFKA_BROKERS", broker)
        .with("KAFKA_TOPIC_PREFIX", prefix)
        .with("KAFKA_CREATE_TOPICS", "true");
    KafkaConfig::from_vars(&vars).unwrap()
}

/// Whether one event gets to `topic` within a few seconds with `config`'s security.
async fn delivers(config: &KafkaConfig, topic: &str) -> bool {
    let producer: FutureProducer = config.client().set("message.timeout.ms", "4000").create().unwrap();
    let record = FutureRecord::to(topic).key("k").payload("v");
    producer.send(record, Duration::from_secs(5)).await.is_ok()
}

fn prefix() -> String {
    format!("t{}.", uuid::Uuid::now_v7().simple())
}

#[tokio::test]
async fn a_broker_that_requires_sasl_admits_only_clients_that_authenticate() {
    shop_testkit::init_tracing();
    let broker = TestBroker::start_secured(None, &[("order", "order-password")]).await;
    let prefix = prefix();
    let sasl = [
        ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
        ("KAFKA_SASL_USERNAME", "order"),
        ("KAFKA_SASL_PASSWORD", "order-password"),
    ];
    let authenticated = config(&broker.address(), &prefix, &sasl);
    let topic = authenticated.topic("shop.order.v1");
    ensure_topics(&authenticated, &[&topic], 1).await.unwrap();
    assert!(delivers(&authenticated, &topic).await, "a client that authenticates is served");
    let anonymous = config(&broker.address(), &prefix, &[]);
    assert!(!delivers(&anonymous, &topic).await, "a client without SASL is refused");
}

#[tokio::test]
async fn a_tls_broker_is_reached_only_through_the_trusted_ca_and_by_its_name() {
    shop_testkit::init_tracing();
    let certificate = LocalhostCertificate::for_names(&["localhost"]);
    let broker = TestBroker::start_secured(Some(&certificate), &[("order", "order-password")]).await;
    let (trusted, other) =
        (certificate.write_ca("shop-kafka-ca"), LocalhostCertificate::generate().write_ca("other-ca"));
    let prefix = prefix();
    let secured = |ca: &std::path::Path| {
        [
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl".to_owned()),
            ("KAFKA_SASL_USERNAME", "order".to_owned()),
            ("KAFKA_SASL_PASSWORD", "order-password".to_owned()),
            ("KAFKA_CA_FILE", ca.display().to_string()),
        ]
    };
    let pairs = |list: &[(&'static str, String)]| list.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
    let good = pairs(&secured(&trusted));
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let client = config(&broker.address(), &prefix, &good);
    let topic = client.topic("shop.order.v1");
    ensure_topics(&client, &[&topic], 1).await.unwrap();
    assert!(delivers(&client, &topic).await, "TLS through the trusted CA, then SASL");

    let wrong_ca = pairs(&secured(&other));
    let wrong_ca: Vec<(&str, &str)> = wrong_ca.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert!(!delivers(&config(&broker.address(), &prefix, &wrong_ca), &topic).await, "refused under another CA");
    let port = broker.address().rsplit_once(':').unwrap().1.to_owned();
    assert!(
        !delivers(&config(&format!("127.0.0.1:{port}"), &prefix, &good), &topic).await,
        "refused by an address the certificate does not name"
    );
    let tls_only: Vec<(&str, &str)> = good.iter().copied().filter(|(k, _)| !k.starts_with("KAFKA_SASL")).collect();
    let tls_only: Vec<(&str, &str)> =
        tls_only.into_iter().map(|(k, v)| if k == "KAFKA_SECURITY_PROTOCOL" { (k, "ssl") } else { (k, v) }).collect();
    assert!(!delivers(&config(&broker.address(), &prefix, &tls_only), &topic).await, "TLS without SASL is refused");
    assert!(!delivers(&config(&broker.address(), &prefix, &[]), &topic).await, "plaintext is refused");
    for file in [trusted, other] {
        std::fs::remove_file(file).unwrap();
    }
}
