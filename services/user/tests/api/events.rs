use std::time::Duration;

use rdkafka::{
    ClientConfig, Message as _,
    consumer::{Consumer as _, StreamConsumer},
    message::Headers as _,
};
use reqwest::StatusCode;
use shop_proto::shop::events::v1::UserRegistered;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_registration_publishes_user_registered_and_a_failed_one_nothing() {
    let app = spawn_app().await;
    let (id, _) = app.customer("ada@example.com").await;
    assert_eq!(app.register("ada@example.com", "password-123", "Again").await.status(), StatusCode::CONFLICT);
    app.customer("bob@example.com").await;

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()))
        .set("group.id", format!("reader-{}", uuid::Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[format!("{}shop.user.v1", app.topic_prefix).as_str()]).unwrap();
    let mut events = Vec::new();
    while events.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("UserRegistered events")
            .unwrap();
        let headers = message.headers().unwrap();
        let ce_type = headers
            .iter()
            .find(|h| h.key == "ce_type")
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        assert_eq!(ce_type.as_deref(), Some("shop.user.v1.UserRegistered"));
        let key = String::from_utf8_lossy(message.key().unwrap()).into_owned();
        let event: UserRegistered = prost::Message::decode(message.payload().unwrap()).unwrap();
        assert_eq!(event.user_id, key, "key = aggregate id");
        events.push(event);
    }
    let emails: Vec<&str> = events.iter().map(|event| event.email.as_str()).collect();
    assert!(emails.contains(&"ada@example.com") && emails.contains(&"bob@example.com"), "{emails:?}");
    assert!(events.iter().any(|event| event.user_id == id));
    // The duplicate registration rolled back with its event: no third message shows up.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await.is_err(),
        "no event for a failed registration"
    );
}
