//! Crash a consumer service in the middle of a batch of checkouts, restart it, and check
//! the guarantees: every placed order ends confirmed or cancelled, a confirmed order has
//! exactly one succeeded payment, nothing is lost or applied twice, and stock balances.

use std::{sync::mpsc, time::Duration};

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{Payment, TestApp, order_body, payment_vars, spawn_with};

/// A payment service on its own runtime, so that it can die abruptly: dropping the runtime
/// drops every task at its current await point, as `kill -9` would stop the process (open
/// transactions roll back with their connections, offsets stay uncommitted).
struct Crashable {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Crashable {
    fn start(app: &TestApp) -> Self {
        let vars = payment_vars(&app.payment_db, &app.issuer, &app.topic_prefix);
        let (ready_tx, ready_rx) = mpsc::channel();
        // Built on a thread of its own: block_on cannot run inside the test's runtime.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let config = payment_service::config::Config::from_vars(&vars).unwrap();
            let application = runtime.block_on(payment_service::app::Application::build(config)).unwrap();
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
    let app = spawn_with(Payment::Absent).await;
    let stock = 100;
    let product = app.product("RUSH", 1500, stock).await;
    let cards = ["tok_visa", "tok_visa", "tok_chargeDeclined", "tok_visa", "tok_processingError"];
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
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM payments").fetch_one(&payments).await.unwrap_or(0)
    };
    let first = Crashable::start(&app);
    shop_testkit::eventually("some payments to be taken", Duration::from_secs(60), || async {
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
    let mut confirmed = 0;
    for (token, id, card) in &orders {
        let status = shop_testkit::eventually(&format!("order {id} to settle"), Duration::from_secs(90), || async {
            status_of(&app, token, id).await.filter(|status| status != "pending_payment")
        })
        .await;
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
