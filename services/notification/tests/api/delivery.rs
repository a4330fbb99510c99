use std::time::Duration;

use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::FutureRecord,
};
use serde_json::Value;
use shop_kit::{config::Vars, events::KafkaConfig};
use shop_proto::shop::{
    common::v1::Money,
    events::v1::{
        OrderCancelled, OrderConfirmed, OrderDelivered, OrderLine, OrderShipped, PaymentRefunded, UserRegistered,
    },
};
use shop_testkit::{SmtpSink, TestDb, TestIssuer, TestServer, eventually, http_client};
use uuid::Uuid;

pub(crate) struct TestApp {
    pub(crate) server: TestServer,
    pub(crate) issuer: TestIssuer,
    prefix: String,
    pub(crate) db: TestDb,
}

fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub(crate) async fn spawn(smtp: Option<&SmtpSink>) -> TestApp {
    spawn_with(smtp.map(SmtpSink::url), &[]).await
}

/// The service with `SMTP_URL` (when given) and more settings.
pub(crate) async fn spawn_with(smtp_url: Option<String>, extra: &[(&str, String)]) -> TestApp {
    let issuer = TestIssuer::start().await;
    let db = TestDb::new().await;
    let prefix = format!("t{}.", Uuid::now_v7().simple());
    let mut vars = Vars::from_pairs([
        ("DATABASE_URL", db.url().to_owned()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("JWKS_URL", issuer.jwks_url()),
        ("KAFKA_BROKERS", brokers()),
        ("KAFKA_TOPIC_PREFIX", prefix.clone()),
        ("KAFKA_CREATE_TOPICS", "true".to_owned()),
    ]);
    if let Some(url) = smtp_url {
        vars = vars.with("SMTP_URL", url);
    }
    for (name, value) in extra {
        vars = vars.with(name, value.clone());
    }
    let app = notification_service::app::build(notification_service::config::Config::from_vars(&vars).unwrap())
        .await
        .unwrap();
    let server = TestServer::spawn(app.local_addr(), |shutdown| app.run(shutdown));
    TestApp { server, issuer, prefix, db }
}

/// The `ce_source` of the service that owns the topic of `ce_type`.
fn owner_of(ce_type: &str) -> &'static str {
    shop_proto::contracts::TOPICS
        .iter()
        .find(|topic| ce_type.strip_prefix(topic.name).is_some_and(|rest| rest.starts_with('.')))
        .map_or("", |topic| topic.source)
}

async fn publish(app: &TestApp, topic: &str, ce_type: &str, key: &str, ce_id: Uuid, message: &impl prost::Message) {
    publish_traced(app, (topic, ce_type, key, ce_id), message, None).await;
}

/// [`publish`] with a W3C `traceparent` header when given one.
async fn publish_traced(
    app: &TestApp,
    (topic, ce_type, key, ce_id): (&str, &str, &str, Uuid),
    message: &impl prost::Message,
    traceparent: Option<&str>,
) {
    let producer = KafkaConfig::for_brokers(&brokers()).producer().unwrap();
    let id = ce_id.to_string();
    let mut headers = OwnedHeaders::new()
        .insert(Header { key: "ce_id", value: Some(id.as_str()) })
        .insert(Header { key: "ce_type", value: Some(ce_type) })
        .insert(Header { key: "ce_source", value: Some(owner_of(ce_type)) });
    if let Some(traceparent) = traceparent {
        headers = headers.insert(Header { key: "traceparent", value: Some(traceparent) });
    }
    let topic = format!("{}{topic}", app.prefix);
    let payload = message.encode_to_vec();
    producer
        .send(FutureRecord::to(&topic).key(key).payload(&payload).headers(headers), Duration::from_secs(5))
        .await
        .unwrap();
}

async fn notifications(app: &TestApp, token: &str) -> Vec<Value> {
    let page: Value = http_client()
        .get(app.server.url("/v1/notifications"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().clone()
}

fn registered(user: Uuid, email: &str) -> UserRegistered {
    UserRegistered { user_id: user.to_string(), email: email.into(), name: "Ada".into(), registered_at: None }
}

fn confirmed(order: Uuid, user: Uuid) -> OrderConfirmed {
    let usd = |amount| Some(Money { amount, currency: "USD".into() });
    OrderConfirmed {
        order_id: order.to_string(),
        user_id: user.to_string(),
        lines: vec![OrderLine {
            product_id: Uuid::now_v7().to_string(),
            name: "Desk lamp".into(),
            quantity: 2,
            unit_price: usd(2000),
        }],
        total: usd(4000),
    }
}

#[tokio::test]
async fn events_become_emails_once_each() {
    let smtp = SmtpSink::start().await;
    let app = spawn(Some(&smtp)).await;
    let (user, token) = app.issuer.customer();
    let welcome = Uuid::now_v7();
    publish(
        &app,
        "shop.user.v1",
        "shop.user.v1.UserRegistered",
        &user.to_string(),
        welcome,
        &registered(user, "ada@example.com"),
    )
    .await;
    let order = Uuid::now_v7();
    publish(
        &app,
        "shop.order.v1",
        "shop.order.v1.OrderConfirmed",
        &order.to_string(),
        Uuid::now_v7(),
        &confirmed(order, user),
    )
    .await;
    let shipped = OrderShipped {
        order_id: order.to_string(),
        user_id: user.to_string(),
        carrier: "DHL".into(),
        tracking_number: "JD0146-0001".into(),
        shipped_at: None,
    };
    publish(&app, "shop.order.v1", "shop.order.v1.OrderShipped", &order.to_string(), Uuid::now_v7(), &shipped).await;
    // Delivery is not announced: OrderDelivered is ignored, not dead-lettered.
    let delivered = OrderDelivered { order_id: order.to_string(), user_id: user.to_string(), delivered_at: None };
    publish(&app, "shop.order.v1", "shop.order.v1.OrderDelivered", &order.to_string(), Uuid::now_v7(), &delivered)
        .await;
    eventually("three emails", Duration::from_secs(30), || async { (smtp.messages().len() == 3).then_some(()) }).await;
    let all = smtp.messages().join("\n---\n");
    assert!(all.contains(&format!("Subject: Order {order} is on its way")), "{all}");
    assert!(all.contains("shipped with DHL") && all.contains("Tracking number: JD0146-0001"), "{all}");
    assert!(all.contains("Subject: Welcome to Shop"), "{all}");
    assert!(all.contains(&format!("Subject: Order {order} is confirmed")), "{all}");
    assert!(
        all.contains("40.00 USD") && all.contains("2 x Desk lamp at 20.00 USD"),
        "the body carries the totals: {all}"
    );
    assert!(all.contains("To: ada@example.com"), "{all}");
    assert!(
        all.contains("multipart/alternative") && all.contains("text/plain") && all.contains("text/html"),
        "each email has a plain-text and an HTML body: {all}"
    );

    // The welcome event is delivered again, then another event on the same key (so after it).
    publish(
        &app,
        "shop.user.v1",
        "shop.user.v1.UserRegistered",
        &user.to_string(),
        welcome,
        &registered(user, "ada@example.com"),
    )
    .await;
    let marker = registered(user, "ada@example.com");
    publish(&app, "shop.user.v1", "shop.user.v1.UserRegistered", &user.to_string(), Uuid::now_v7(), &marker).await;
    eventually("the marker email", Duration::from_secs(30), || async { (smtp.messages().len() >= 4).then_some(()) })
        .await;
    // Same partition: the duplicate was consumed before the marker, so the count is final.
    assert_eq!(smtp.messages().len(), 4, "the redelivered event sent nothing");

    // The worker records "sent" just after the send: wait for the record.
    let stored = eventually("four notifications marked sent", Duration::from_secs(10), || async {
        let stored = notifications(&app, &token).await;
        (stored.len() == 4 && stored.iter().all(|n| n["status"] == "sent" && n["channel"] == "email")).then_some(stored)
    })
    .await;
    assert_eq!(stored.len(), 4);
    let (_, stranger) = app.issuer.customer();
    assert!(notifications(&app, &stranger).await.is_empty(), "notifications are private");
    let anonymous = http_client().get(app.server.url("/v1/notifications")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn failed_sends_are_retried_and_every_attempt_is_kept() {
    let smtp = SmtpSink::start().await;
    smtp.refuse_next(2);
    let app = spawn(Some(&smtp)).await;
    let (user, token) = app.issuer.customer();
    publish(
        &app,
        "shop.user.v1",
        "shop.user.v1.UserRegistered",
        &user.to_string(),
        Uuid::now_v7(),
        &registered(user, "bob@example.com"),
    )
    .await;
    eventually("the email after two refusals", Duration::from_secs(30), || async {
        (smtp.messages().len() == 1).then_some(())
    })
    .await;
    let stored = eventually("the notification marked sent", Duration::from_secs(10), || async {
        let stored = notifications(&app, &token).await;
        (stored.first()?["status"] == "sent").then_some(stored)
    })
    .await;
    assert_eq!(stored[0]["attempts"], 3, "two refusals, then success");
}

/// The first failed delivery attempt's error, once there is one.
async fn first_failure(app: &TestApp) -> String {
    let pool = sqlx::PgPool::connect(app.db.url()).await.unwrap();
    eventually("a failed delivery attempt", Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT error FROM delivery_attempts WHERE NOT succeeded ORDER BY attempt LIMIT 1",
        )
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten()
        .flatten()
    })
    .await
}

#[tokio::test]
async fn mail_goes_over_starttls_with_authentication_to_a_relay_whose_certificate_is_trusted() {
    let smtp = SmtpSink::start_tls("shop", "s3cr#t").await;
    let ca = smtp.ca_file().unwrap().to_str().unwrap().to_owned();
    // The password percent-encoded in the URL, as lettre reads it.
    let url = |password: &str| format!("smtp://shop:{password}@localhost:{}?tls=required", smtp.port());
    let register = async |app: &TestApp| {
        let user = Uuid::now_v7();
        let event = registered(user, "tls@example.com");
        publish(app, "shop.user.v1", "shop.user.v1.UserRegistered", &user.to_string(), Uuid::now_v7(), &event).await;
    };

    // A relay whose certificate nobody vouched for: nothing is sent, the attempt says why.
    let untrusted = spawn_with(Some(url("s3cr%23t")), &[]).await;
    register(&untrusted).await;
    let error = first_failure(&untrusted).await;
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    // The wrong password: refused by the relay.
    let wrong = spawn_with(Some(url("guess")), &[("SMTP_CA_FILE", ca.clone())]).await;
    register(&wrong).await;
    let error = first_failure(&wrong).await;
    assert!(error.contains("535") || error.to_lowercase().contains("credentials"), "{error}");
    assert!(smtp.received().is_empty(), "nothing was accepted: {:?}", smtp.received());

    // Trusted through SMTP_CA_FILE, with the right password: sent over TLS as `shop`.
    let app = spawn_with(Some(url("s3cr%23t")), &[("SMTP_CA_FILE", ca)]).await;
    register(&app).await;
    let received =
        eventually("the email over TLS", Duration::from_secs(30), || async { smtp.received().into_iter().next() })
            .await;
    assert!(received.tls && received.user.as_deref() == Some("shop"), "{received:?}");
    assert!(received.message.contains("tls@example.com"));
}

#[tokio::test]
async fn without_smtp_notifications_go_to_the_log() {
    let app = spawn(None).await;
    let (user, token) = app.issuer.customer();
    let order = Uuid::now_v7();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    publish_traced(
        &app,
        ("shop.order.v1", "shop.order.v1.OrderConfirmed", &order.to_string(), Uuid::now_v7()),
        &confirmed(order, user),
        Some(&format!("00-{trace_id}-00f067aa0ba902b7-01")),
    )
    .await;
    let stored = eventually("the logged notification", Duration::from_secs(30), || async {
        let stored = notifications(&app, &token).await;
        (stored.first()?["status"] == "sent").then_some(stored)
    })
    .await;
    assert_eq!(stored[0]["channel"], "log");
    assert_eq!(stored[0]["template"], "order_confirmed");
    // And the delivery is announced on shop.notification.v1.
    use rdkafka::{Message as _, consumer::Consumer as _};
    let reader = KafkaConfig::for_brokers(&brokers()).consumer(&format!("reader-{}", Uuid::now_v7())).unwrap();
    reader.subscribe(&[format!("{}shop.notification.v1", app.prefix).as_str()]).unwrap();
    let message =
        tokio::time::timeout(Duration::from_secs(30), reader.recv()).await.expect("NotificationDelivered").unwrap();
    let delivered: shop_proto::shop::events::v1::NotificationDelivered =
        prost::Message::decode(message.payload().unwrap()).unwrap();
    assert_eq!(delivered.notification_id, stored[0]["id"].as_str().unwrap());
    assert_eq!(delivered.channel, "log");
    // The delivery worker continued the confirmed order's trace, and the event carries it.
    use rdkafka::message::Headers as _;
    let traceparent = message
        .headers()
        .and_then(|headers| headers.iter().find(|header| header.key == "traceparent"))
        .and_then(|header| header.value)
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .expect("NotificationDelivered carries a traceparent");
    assert!(traceparent.starts_with(&format!("00-{trace_id}-")), "{traceparent}");
    assert!(stored[0]["body"].as_str().unwrap().contains(&order.to_string()));
}

#[tokio::test]
async fn an_order_cancelled_again_by_its_late_payment_is_announced_once_and_refunded_once() {
    let app = spawn(None).await;
    let (user, token) = app.issuer.customer();
    let order = Uuid::now_v7();
    let key = order.to_string();
    let total = Some(Money { amount: 4000, currency: "USD".into() });
    let cancelled = |reason: &str, refund: bool| OrderCancelled {
        order_id: order.to_string(),
        user_id: user.to_string(),
        lines: Vec::new(),
        total: total.clone(),
        reason: reason.into(),
        refund,
    };
    // The customer cancels while the payment is in flight; the payment then succeeds, so the
    // order service cancels again with a refund, and payment refunds.
    let by_user = cancelled("cancelled by user", false);
    publish(&app, "shop.order.v1", "shop.order.v1.OrderCancelled", &key, Uuid::now_v7(), &by_user).await;
    let late = cancelled("paid after cancellation", true);
    publish(&app, "shop.order.v1", "shop.order.v1.OrderCancelled", &key, Uuid::now_v7(), &late).await;
    let refunded = PaymentRefunded {
        payment_id: Uuid::now_v7().to_string(),
        order_id: order.to_string(),
        user_id: user.to_string(),
        amount: total.clone(),
    };
    publish(&app, "shop.payment.v1", "shop.payment.v1.PaymentRefunded", &key, Uuid::now_v7(), &refunded).await;
    // A marker after both cancellations on the same partition: once it is stored, they were
    // consumed.
    let marker = Uuid::now_v7();
    let marker_event = confirmed(marker, user);
    publish(&app, "shop.order.v1", "shop.order.v1.OrderConfirmed", &key, Uuid::now_v7(), &marker_event).await;
    let stored = eventually("the marker and the refund", Duration::from_secs(30), || async {
        let stored = notifications(&app, &token).await;
        let has = |template: &str| stored.iter().any(|n| n["template"] == template);
        (has("order_confirmed") && has("payment_refunded")).then_some(stored)
    })
    .await;
    let mut templates: Vec<&str> = stored.iter().map(|n| n["template"].as_str().unwrap()).collect();
    templates.sort_unstable();
    assert_eq!(templates, ["order_cancelled", "order_confirmed", "payment_refunded"], "{stored:#?}");
    let cancellation = stored.iter().find(|n| n["template"] == "order_cancelled").unwrap();
    assert!(
        cancellation["body"].as_str().unwrap().contains("cancelled by user"),
        "the first one is kept: {cancellation}"
    );
}

/// Mail in two steps: while a slow relay takes a message, the service holds no transaction
/// (the claim was committed first), and the claimed notification is leased, not locked.
#[tokio::test]
async fn a_slow_relay_holds_no_transaction_open() {
    let smtp = SmtpSink::start().await;
    smtp.slow(Duration::from_millis(1500));
    let app = spawn(Some(&smtp)).await;
    let (user, _) = app.issuer.customer();
    let welcome = registered(user, "ada@example.com");
    publish(&app, "shop.user.v1", "shop.user.v1.UserRegistered", &user.to_string(), Uuid::now_v7(), &welcome).await;
    eventually("the relay to be receiving", Duration::from_secs(30), || async {
        (smtp.in_flight() == 1).then_some(())
    })
    .await;
    let pool = sqlx::PgPool::connect(app.db.url()).await.unwrap();
    let leased: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifications WHERE status = 'pending' AND next_attempt_at > now() + interval '60 seconds'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(leased, 1, "the notification being sent is claimed for its lease");
    while smtp.in_flight() == 1 {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND state LIKE 'idle in transaction%' AND now() - xact_start > interval '300 milliseconds'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(open, 0, "no transaction waits on the relay");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually("the notification marked sent", Duration::from_secs(10), || async {
        let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications WHERE status = 'sent' AND attempts = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
        (sent == 1).then_some(())
    })
    .await;
    assert_eq!(smtp.messages().len(), 1);
}

/// A claim is a lease: claimed notifications are not claimed again until it ends, and a
/// worker that died (its lease ended) leaves exactly its own to be claimed again.
#[tokio::test]
async fn claims_are_leases() {
    let db = shop_testkit::TestDb::new().await;
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    shop_kit::db::prepare(&pool, &notification_service::MIGRATOR).await.unwrap();
    for _ in 0..3 {
        sqlx::query(
            "INSERT INTO notifications (id, event_id, user_id, channel, template, subject, body) \
             VALUES ($1, $2, $3, 'log', 'welcome', 'Welcome', 'Hello')",
        )
        .bind(Uuid::now_v7())
        .bind(Uuid::now_v7())
        .bind(Uuid::now_v7())
        .execute(&pool)
        .await
        .unwrap();
    }
    let lease = notification_service::delivery::LEASE;
    let mut connection = pool.acquire().await.unwrap();
    let first = notification_service::store::claim_due(&mut connection, 2, lease).await.unwrap();
    let second = notification_service::store::claim_due(&mut connection, 10, lease).await.unwrap();
    assert_eq!((first.len(), second.len()), (2, 1), "a claimed notification is not claimed twice");
    assert!(notification_service::store::claim_due(&mut connection, 10, lease).await.unwrap().is_empty());
    // The first worker died: its lease ends, and exactly its two are due again.
    sqlx::query("UPDATE notifications SET next_attempt_at = now() WHERE id = ANY($1)")
        .bind(first.iter().map(|n| n.id).collect::<Vec<_>>())
        .execute(&mut *connection)
        .await
        .unwrap();
    let again = notification_service::store::claim_due(&mut connection, 10, lease).await.unwrap();
    let ids = |claimed: &[notification_service::domain::Notification]| claimed.iter().map(|n| n.id).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&first));
}
