use std::time::Duration;

use rdkafka::{
    ClientConfig, Message as _,
    consumer::{Consumer as _, StreamConsumer},
    message::Headers as _,
};
use reqwest::Method;
use serde_json::{Value, json};
use shop_proto::shop::events::v1::{OrderCancelled, OrderPlaced};

use crate::helpers::{address, assert_problem, order_body, spawn_app};

/// Reads `count` events from the app's order topic: (ce_type, payload) each.
async fn order_events(app: &crate::helpers::TestApp, count: usize) -> Vec<(String, Vec<u8>)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()))
        .set("group.id", format!("reader-{}", uuid::Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[format!("{}shop.order.v1", app.topic_prefix).as_str()]).unwrap();
    let mut events = Vec::new();
    while events.len() < count {
        let message =
            tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await.expect("order events").unwrap();
        let ce_type = message.headers().unwrap().iter().find(|h| h.key == "ce_type").and_then(|h| h.value).unwrap();
        events.push((String::from_utf8_lossy(ce_type).into_owned(), message.payload().unwrap().to_vec()));
    }
    events
}

#[tokio::test]
async fn checkout_turns_the_cart_into_an_order_holds_stock_and_publishes_order_placed() {
    let app = spawn_app().await;
    let lamp = app.product("LAMP", 2999, 10).await;
    let mug = app.product("MUG", 1250, 10).await;
    let (buyer_id, buyer) = app.issuer.customer();
    app.add_to_cart(&buyer, &lamp, 2).await;
    app.add_to_cart(&buyer, &mug, 1).await;

    let response = app.place(&buyer, &order_body("tok_visa"), None).await;
    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["status"], "pending_payment");
    assert_eq!(order["user_id"], buyer_id.to_string());
    assert_eq!(order["total"], json!({"amount": 2 * 2999 + 1250, "currency": "USD"}));
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    assert_eq!(order["shipping_address"]["country"], "GB");
    assert_eq!(app.available(&lamp).await, 8, "stock is held");
    assert_eq!(app.available(&mug).await, 9);

    let id = order["id"].as_str().unwrap();
    let read: Value =
        app.call(&app.order, Method::GET, &format!("/v1/orders/{id}"), Some(&buyer), None).await.json().await.unwrap();
    assert_eq!(read["id"], id);
    let listed: Value = app.call(&app.order, Method::GET, "/v1/orders", Some(&buyer), None).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let (_, stranger) = app.issuer.customer();
    assert_problem(
        app.call(&app.order, Method::GET, &format!("/v1/orders/{id}"), Some(&stranger), None).await,
        403,
        "forbidden",
        "not yours",
    )
    .await;
    let strangers: Value =
        app.call(&app.order, Method::GET, "/v1/orders", Some(&stranger), None).await.json().await.unwrap();
    assert!(strangers["items"].as_array().unwrap().is_empty());
    let all: Value =
        app.call(&app.order, Method::GET, "/v1/orders", Some(&app.admin), None).await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 1, "admins see every order");

    let events = order_events(&app, 1).await;
    assert_eq!(events[0].0, "shop.order.v1.OrderPlaced");
    let placed: OrderPlaced = prost::Message::decode(events[0].1.as_slice()).unwrap();
    assert_eq!(placed.order_id, id);
    assert_eq!(placed.card_token, "tok_visa");
    assert_eq!(placed.total.unwrap().amount, 2 * 2999 + 1250);
    assert_eq!(placed.lines.len(), 2);
}

#[tokio::test]
async fn prices_come_from_the_catalog_at_checkout() {
    let app = spawn_app().await;
    let lamp = app.product("LAMP", 2999, 10).await;
    let (_, buyer) = app.issuer.customer();
    app.add_to_cart(&buyer, &lamp, 1).await;
    app.call(
        &app.product,
        Method::PATCH,
        &format!("/v1/products/{lamp}"),
        Some(&app.admin),
        Some(&json!({"price": {"amount": 3499, "currency": "USD"}})),
    )
    .await;
    let order: Value = app.place(&buyer, &order_body("tok_visa"), None).await.json().await.unwrap();
    assert_eq!(order["total"]["amount"], 3499, "the catalog is the authority on price");
    app.call(
        &app.product,
        Method::PATCH,
        &format!("/v1/products/{lamp}"),
        Some(&app.admin),
        Some(&json!({"active": false})),
    )
    .await;
    let (_, other) = app.issuer.customer();
    let mug = app.product("MUG", 100, 10).await;
    app.add_to_cart(&other, &mug, 1).await;
    // Taken off sale after it went into the cart: checkout refuses it.
    app.call(
        &app.product,
        Method::PATCH,
        &format!("/v1/products/{mug}"),
        Some(&app.admin),
        Some(&json!({"active": false})),
    )
    .await;
    assert_problem(
        app.place(&other, &order_body("tok_visa"), None).await,
        409,
        "product_unavailable",
        "inactive at checkout",
    )
    .await;
}

#[tokio::test]
async fn bad_orders_are_refused_and_hold_nothing() {
    let app = spawn_app().await;
    let scarce = app.product("SCARCE", 500, 1).await;
    let (_, buyer) = app.issuer.customer();
    assert_problem(app.place(&buyer, &order_body("tok_visa"), None).await, 409, "cart_empty", "empty cart").await;
    app.add_to_cart(&buyer, &scarce, 2).await;
    assert_problem(app.place(&buyer, &order_body("tok_visa"), None).await, 409, "out_of_stock", "short stock").await;
    assert_eq!(app.available(&scarce).await, 1, "a refused order holds nothing");

    let mut bad_country = order_body("tok_visa");
    bad_country["shipping_address"]["country"] = json!("United Kingdom");
    let mut missing_postcode = order_body("tok_visa");
    missing_postcode["shipping_address"].as_object_mut().unwrap().remove("postal_code");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("bad country", bad_country, "shipping_address.country"),
        ("missing postal code", missing_postcode, "shipping_address.postal_code"),
        ("card number instead of token", order_body("4242 4242 4242 4242"), "payment.card_token"),
        ("bare card number", order_body("4242424242424242"), "payment.card_token"),
        ("no payment", json!({"shipping_address": address()}), "payment"),
        (
            "unknown field",
            json!({"shipping_address": address(), "payment": {"card_token": "tok_visa"}, "total": 1}),
            "total",
        ),
    ];
    for (case, body, field) in cases {
        let problem = assert_problem(app.place(&buyer, &body, None).await, 422, "validation_failed", case).await;
        assert_eq!(problem["errors"][0]["field"], field, "case {case}: {problem}");
    }
    let anonymous = app.client.post(app.order.url("/v1/orders")).json(&order_body("tok_visa")).send().await.unwrap();
    assert_problem(anonymous, 401, "unauthenticated", "no token").await;
    assert_eq!(app.orders_in_db().await, 0);
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer() {
    let app = spawn_app().await;
    let lamp = app.product("LAMP", 2999, 10).await;
    let (_, buyer) = app.issuer.customer();
    app.add_to_cart(&buyer, &lamp, 1).await;
    let first = app.place(&buyer, &order_body("tok_visa"), Some("key-1")).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let body = order_body("tok_visa");
    let retries = (0..3).map(|_| app.place(&buyer, &body, Some("key-1")));
    for retry in futures::future::join_all(retries).await {
        assert_eq!(retry.status(), 201);
        assert_eq!(retry.headers()["idempotent-replayed"], "true");
        let retry: Value = retry.json().await.unwrap();
        assert_eq!(retry["id"], first["id"], "the same order comes back");
    }
    assert_eq!(app.orders_in_db().await, 1);
    assert_eq!(app.available(&lamp).await, 9, "held once");
    let other_body = app.place(&buyer, &order_body("tok_chargeDeclined"), Some("key-1")).await;
    assert_problem(other_body, 422, "idempotency_key_reused", "same key, other body").await;
    // Another user may use the same key string.
    let (_, other) = app.issuer.customer();
    app.add_to_cart(&other, &lamp, 1).await;
    assert_eq!(app.place(&other, &order_body("tok_visa"), Some("key-1")).await.status(), 201);
    let long_key = "k".repeat(256);
    assert_problem(
        app.place(&buyer, &order_body("tok_visa"), Some(&long_key)).await,
        422,
        "validation_failed",
        "long key",
    )
    .await;
}

#[tokio::test]
async fn many_buyers_racing_for_few_units_never_oversell() {
    let app = spawn_app().await;
    let scarce = app.product("SCARCE", 999, 3).await;
    let mut buyers = Vec::new();
    for _ in 0..10 {
        let (_, token) = app.issuer.customer();
        app.add_to_cart(&token, &scarce, 1).await;
        buyers.push(token);
    }
    let body = order_body("tok_visa");
    let attempts = buyers.iter().map(|token| app.place(token, &body, None));
    let statuses: Vec<u16> =
        futures::future::join_all(attempts).await.iter().map(|response| response.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|status| **status == 201).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|status| **status == 409).count(), 7, "{statuses:?}");
    assert_eq!(app.available(&scarce).await, 0);
    assert_eq!(app.orders_in_db().await, 3);
}

#[tokio::test]
async fn cancelling_a_pending_order_releases_its_stock_once() {
    let app = spawn_app().await;
    let lamp = app.product("LAMP", 2999, 5).await;
    let (_, buyer) = app.issuer.customer();
    app.add_to_cart(&buyer, &lamp, 2).await;
    let order: Value = app.place(&buyer, &order_body("tok_visa"), None).await.json().await.unwrap();
    let path = format!("/v1/orders/{}/cancel", order["id"].as_str().unwrap());
    let (_, stranger) = app.issuer.customer();
    assert_problem(
        app.call(&app.order, Method::POST, &path, Some(&stranger), None).await,
        403,
        "forbidden",
        "not yours",
    )
    .await;
    let cancelled: Value = app.call(&app.order, Method::POST, &path, Some(&buyer), None).await.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(app.available(&lamp).await, 5, "the hold is released");
    assert_problem(
        app.call(&app.order, Method::POST, &path, Some(&buyer), None).await,
        409,
        "illegal_transition",
        "twice",
    )
    .await;
    let unknown = format!("/v1/orders/{}/cancel", uuid::Uuid::now_v7());
    assert_problem(
        app.call(&app.order, Method::POST, &unknown, Some(&buyer), None).await,
        404,
        "order_not_found",
        "unknown",
    )
    .await;

    let events = order_events(&app, 2).await;
    assert_eq!(events[1].0, "shop.order.v1.OrderCancelled");
    let event: OrderCancelled = prost::Message::decode(events[1].1.as_slice()).unwrap();
    assert!(!event.refund, "a pending order was never paid");
    assert_eq!(event.order_id, order["id"].as_str().unwrap());
}

#[tokio::test]
async fn an_order_that_cannot_be_stored_gives_its_stock_back() {
    let app = spawn_app().await;
    let lamp = app.product("LAMP", 2999, 5).await;
    let (_, buyer) = app.issuer.customer();
    app.add_to_cart(&buyer, &lamp, 2).await;
    let pool = sqlx::PgPool::connect(app.order_db.url()).await.unwrap();
    // The database refuses new orders (after the stock was held).
    sqlx::query("ALTER TABLE orders ADD CONSTRAINT refuse_all CHECK (false) NOT VALID").execute(&pool).await.unwrap();
    let failed = app.place(&buyer, &order_body("tok_visa"), Some("compensate-1")).await;
    assert_problem(failed, 500, "internal", "storing failed").await;
    assert_eq!(app.available(&lamp).await, 5, "compensation released the hold");
    assert_eq!(app.orders_in_db().await, 0);
    sqlx::query("ALTER TABLE orders DROP CONSTRAINT refuse_all").execute(&pool).await.unwrap();
    // The key was not spent on the failure: the retry goes through.
    let retried = app.place(&buyer, &order_body("tok_visa"), Some("compensate-1")).await;
    assert_eq!(retried.status(), 201);
    assert_eq!(app.available(&lamp).await, 3);
}
