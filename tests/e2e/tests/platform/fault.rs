//! Crash a consumer service in the middle of a batch of checkouts, restart it, and check
//! the guarantees: every placed order ends confirmed or cancelled, a confirmed order has
//! exactly one succeeded payment, nothing is lost or applied twice, and stock balances.

use std::{sync::mpsc, time::Duration};

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{Platform, TestApp, order_body, payment_vars, spawn_with};

/// A payment service on its own runtime, so that it can die abruptly: dropping the runtime
/// drops every task at its current await point, as `kill -9` would stop the process (open
/// transactions roll back with their connections, offsets stay uncommitted).
struct Crashable {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Crashable {
    fn start(app: &TestApp) -> Self {
        let vars = payment_vars(&app.payment_db, &app.jwks_url, &app.topic_prefix);
        let (ready_tx, ready_rx) = mpsc::channel();
        // Built on a thread of its own: block_on cannot run inside the test's runtime.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let config = payment_service::config::Config::from_vars(&vars).unwrap();
            let application = runtime.block_on(payment_service::app::build(config)).unwrap();
            runtime.spawn(application.run(tokio_util::sync::CancellationToken::new()));
            ready_tx.send(runtime).unwrap();
        });
        let runtime = ready_rx.recv_timeout(Duration::from_secs(60)).expect("the payment service started");
        Self { runtime: Some(runtime) }
    }

    fn crash(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Crashable {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn status_of(app: &TestApp, token: &str, id: &str) -> Option<String> {
    let order: Value =
        app.call(&app.order, Method::GET, &format!("/v1/orders/{id}"), Some(token), None).await.json().await.ok()?;
    order["status"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_service_killed_mid_batch_loses_nothing_and_applies_nothing_twice() {
    let app = spawn_with(Platform::WithoutPayment).await;
    let stock = 100;
    let product = app.product("RUSH", 1500, stock).await;
    let cards = ["tok_visa", "tok_processingError", "tok_chargeDeclined", "tok_visa", "tok_processingError"];
    let mut buyers = Vec::new();
    for index in 0..30 {
        let (_, token) = app.issuer.customer();
        app.add_to_cart(&token, &product, 1).await;
        buyers.push((token, cards[index % cards.len()]));
    }

    // Every order is placed first, so the batch waits in the topic; then the payment
    // service starts and is killed as soon as it is part-way through.
    let mut orders = Vec::new();
    for (token, card) in &buyers {
        let response = app.place(token, &order_body(card), None).await;
        assert_eq!(response.status(), 201);
        orders.push((token.clone(), response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned(), *card));
    }
    let payments = sqlx::PgPool::connect(app.payment_db.url()).await.unwrap();
    // Payments with an outcome (a payment is recorded `pending` first, then charged).
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM payments WHERE status <> 'pending'")
            .fetch_one(&payments)
            .await
            .unwrap_or(0)
    };
    let first = Crashable::start(&app);
    shop_testkit::watch("some payments to be taken", Duration::from_secs(60), Duration::from_millis(5), || async {
        (count().await >= 3).then_some(())
    })
    .await;
    first.crash();
    let taken_before_crash = count().await;
    assert!(
        taken_before_crash < orders.len() as i64,
        "the kill must land mid-batch for this test to mean anything ({taken_before_crash} of {} taken)",
        orders.len()
    );

    let _second = Crashable::start(&app);
    let started = std::time::Instant::now();
    let mut confirmed = 0;
    for (token, id, card) in &orders {
        let status = loop {
            if let Some(status) = status_of(&app, token, id).await.filter(|status| status != "pending_payment") {
                break status;
            }
            if started.elapsed() > Duration::from_secs(90) {
                panic!("orders did not settle within 90 s of the restart:\n{}", whereabouts(&app, &orders).await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status == "confirmed", *card == "tok_visa", "order {id} paid with {card} ended {status}");
        confirmed += i64::from(status == "confirmed");
    }

    let per_order: Vec<(i64,)> =
        sqlx::query_as("SELECT count(*) FROM payments GROUP BY order_id").fetch_all(&payments).await.unwrap();
    assert_eq!(per_order.len(), orders.len(), "every order got a payment: none lost");
    assert!(per_order.iter().all(|(count,)| *count == 1), "one payment per order: none applied twice");
    let succeeded: i64 = sqlx::query_scalar("SELECT count(*) FROM payments WHERE status = 'succeeded'")
        .fetch_one(&payments)
        .await
        .unwrap();
    assert_eq!(succeeded, confirmed, "a confirmed order has exactly one succeeded payment, and only those do");

    let product_db = sqlx::PgPool::connect(app.product_db.url()).await.unwrap();
    shop_testkit::eventually("stock to balance", Duration::from_secs(30), || async {
        let (on_hand, reserved): (i64, i64) =
            sqlx::query_as("SELECT on_hand::bigint, reserved::bigint FROM inventory WHERE product_id = $1::uuid")
                .bind(&product)
                .fetch_one(&product_db)
                .await
                .ok()?;
        (on_hand == stock - confirmed && reserved == 0).then_some(())
    })
    .await;
}

/// Where each unsettled order is in the saga, for a failure message: its payment, whether
/// the payment's event is still in the outbox, whether the order service has consumed it,
/// and the sessions Postgres has open for these databases.
async fn whereabouts(app: &TestApp, orders: &[(String, String, &str)]) -> String {
    let order_db = sqlx::PgPool::connect(app.order_db.url()).await.unwrap();
    let payment_db = sqlx::PgPool::connect(app.payment_db.url()).await.unwrap();
    let mut report = String::new();
    for (_, id, card) in orders {
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1::uuid")
            .bind(id)
            .fetch_optional(&order_db)
            .await
            .unwrap();
        if status.as_deref() != Some("pending_payment") {
            continue;
        }
        let payment: Option<String> = sqlx::query_scalar("SELECT status FROM payments WHERE order_id = $1::uuid")
            .bind(id)
            .fetch_optional(&payment_db)
            .await
            .unwrap();
        let outbox: Option<(bool,)> =
            sqlx::query_as("SELECT published_at IS NOT NULL FROM outbox WHERE key = $1 ORDER BY seq LIMIT 1")
                .bind(id)
                .fetch_optional(&payment_db)
                .await
                .unwrap();
        report.push_str(&format!(
            "order {id} ({card}): payment {payment:?}, payment event published {:?}\n",
            outbox.map(|(published,)| published)
        ));
    }
    for (name, pool) in [("order", &order_db), ("payment", &payment_db)] {
        let inbox: Vec<(String, i64)> =
            sqlx::query_as("SELECT consumer, count(*) FROM inbox GROUP BY consumer").fetch_all(pool).await.unwrap();
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetch_one(pool).await.unwrap();
        report.push_str(&format!("{name} db: inbox {inbox:?}, unpublished outbox rows {pending}\n"));
    }
    let sessions: Vec<(String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT datname::text, state, wait_event, left(query, 80) FROM pg_stat_activity \
         WHERE datname = ANY($1) AND state <> 'idle' AND pid <> pg_backend_pid()",
    )
    .bind([app.order_db.name().to_owned(), app.payment_db.name().to_owned()])
    .fetch_all(&payment_db)
    .await
    .unwrap();
    report.push_str(&format!("busy sessions: {sessions:?}\n"));
    report
}

#[tokio::test(flavor = "current_thread")]
async fn a_broker_killed_and_restarted_mid_batch_loses_nothing() {
    let mut broker = shop_testkit::TestBroker::start().await;
    crate::helpers::use_brokers(&broker.address());
    let app = crate::helpers::spawn_app().await;
    let stock = 50;
    let product = app.product("RESTART", 700, stock).await;
    let mut orders = Vec::new();
    for index in 0..20 {
        let (_, token) = app.issuer.customer();
        app.add_to_cart(&token, &product, 1).await;
        // Transient failures are retried with pauses: they keep the batch in flight long
        // enough for the kill to land part-way through.
        let card = match index % 3 {
            0 => "tok_chargeDeclined",
            1 => "tok_processingError",
            _ => "tok_visa",
        };
        let response = app.place(&token, &order_body(card), None).await;
        assert_eq!(response.status(), 201);
        orders.push((token, response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned(), card));
    }
    let payments = sqlx::PgPool::connect(app.payment_db.url()).await.unwrap();
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM payments").fetch_one(&payments).await.unwrap_or(0)
    };
    shop_testkit::watch("payments to start", Duration::from_secs(60), Duration::from_millis(5), || async {
        (count().await >= 2).then_some(())
    })
    .await;
    // Consumers apply what they have fetched in one transaction, so payments may all land at
    // once; mid-batch means part of the saga is still in flight when the broker dies: some
    // order has not heard of its payment yet.
    let order_db = sqlx::PgPool::connect(app.order_db.url()).await.unwrap();
    let unsettled: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 'pending_payment'")
        .fetch_one(&order_db)
        .await
        .unwrap();
    broker.kill_and_restart().await;
    assert!(unsettled > 0, "the kill must land mid-batch (all {} orders had settled)", orders.len());
    // More orders while clients reconnect: their events wait in the outbox.
    for _ in 0..4 {
        let (_, token) = app.issuer.customer();
        app.add_to_cart(&token, &product, 1).await;
        let response = app.place(&token, &order_body("tok_visa"), None).await;
        assert_eq!(response.status(), 201);
        orders.push((token, response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned(), "tok_visa"));
    }
    let mut confirmed = 0;
    for (token, id, card) in &orders {
        let status = shop_testkit::eventually(&format!("order {id} to settle"), Duration::from_secs(120), || async {
            status_of(&app, token, id).await.filter(|status| status != "pending_payment")
        })
        .await;
        assert_eq!(status == "confirmed", *card == "tok_visa", "order {id} with {card} ended {status}");
        confirmed += i64::from(status == "confirmed");
    }
    let product_db = sqlx::PgPool::connect(app.product_db.url()).await.unwrap();
    shop_testkit::eventually("stock to balance", Duration::from_secs(60), || async {
        let (on_hand, reserved): (i64, i64) =
            sqlx::query_as("SELECT on_hand::bigint, reserved::bigint FROM inventory WHERE product_id = $1::uuid")
                .bind(&product)
                .fetch_one(&product_db)
                .await
                .ok()?;
        (on_hand == stock - confirmed && reserved == 0).then_some(())
    })
    .await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM payments").fetch_one(&payments).await.unwrap();
    assert_eq!(rows, orders.len() as i64, "one payment per order, none lost, none doubled");
    app.stop().await;
}
