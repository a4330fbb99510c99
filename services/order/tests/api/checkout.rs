//! Checkout against stand-ins: the cart's lines, the catalog's prices and stock holds.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{address, assert_problem, order_body, spawn_app, spawn_with};

#[tokio::test]
async fn checkout_prices_the_cart_from_the_catalog_and_holds_its_stock() {
    let app = spawn_app().await;
    let lamp = app.catalog.add("Lamp", 2999, "USD", 10);
    let mug = app.catalog.add("Mug", 1250, "USD", 10);
    let (buyer_id, buyer) = app.issuer.customer();
    app.carts.put(buyer_id, &lamp, 2);
    app.carts.put(buyer_id, &mug, 1);

    let response = app.place(&buyer, &order_body("tok_visa"), None).await;
    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["status"], "pending_payment");
    assert_eq!(order["user_id"], buyer_id.to_string());
    assert_eq!(order["total"], json!({"amount": 2 * 2999 + 1250, "currency": "USD"}));
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    let id = order["id"].as_str().unwrap();
    let mut held = app.catalog.held_for(id);
    held.sort();
    let mut expected = vec![(lamp.clone(), 2), (mug.clone(), 1)];
    expected.sort();
    assert_eq!(held, expected, "the order's lines are held");
    assert_eq!(app.catalog.available(&lamp), 8);

    let read: Value = app.call(Method::GET, &format!("/v1/orders/{id}"), Some(&buyer)).await.json().await.unwrap();
    assert_eq!(read["id"], id);
    let (_, stranger) = app.issuer.customer();
    let not_yours = app.call(Method::GET, &format!("/v1/orders/{id}"), Some(&stranger)).await;
    assert_problem(not_yours, 403, "forbidden", "not yours").await;
    let all: Value = app.call(Method::GET, "/v1/orders", Some(&app.admin)).await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 1, "admins see every order");

    let cancelled: Value =
        app.call(Method::POST, &format!("/v1/orders/{id}/cancel"), Some(&buyer)).await.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert!(app.catalog.held_for(id).is_empty(), "cancelling a pending order releases its hold");
    assert_eq!(app.catalog.available(&lamp), 10);

    // Every call went with the order service's own token for its callee, for the buyer; the
    // buyer's token never left the order service.
    let calls: Vec<_> = app.carts.calls().into_iter().chain(app.catalog.calls()).collect();
    let methods: Vec<_> = calls.iter().map(|call| call.method).collect();
    assert_eq!(methods, ["GetCart", "BatchGetProducts", "ReserveStock", "ReleaseStock"]);
    for call in calls {
        let callee = if call.method == "GetCart" { "service:cart" } else { "service:product" };
        assert_eq!(call.subject.as_deref(), Some("order"), "{call:?}");
        assert_eq!(call.audience.as_deref(), Some(callee), "{call:?}");
        assert_eq!(call.acting_for, Some(buyer_id.to_string()), "{call:?}");
    }
}

#[tokio::test]
async fn without_a_service_token_checkout_answers_503_and_holds_nothing() {
    // A wrong secret: the user service refuses order's token requests.
    let app = spawn_with(|vars| vars.with("SERVICE_CLIENT_SECRET", "x".repeat(40))).await;
    let lamp = app.catalog.add("Lamp", 2999, "USD", 10);
    let (buyer_id, buyer) = app.issuer.customer();
    app.carts.put(buyer_id, &lamp, 1);
    let response = app.place(&buyer, &order_body("tok_visa"), None).await;
    assert_problem(response, 503, "dependency_unavailable", "no token").await;
    assert!(app.carts.calls().is_empty() && app.catalog.calls().is_empty(), "nothing was sent without a token");
    assert_eq!(app.catalog.available(&lamp), 10);
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer() {
    let app = spawn_app().await;
    let lamp = app.catalog.add("Lamp", 2999, "USD", 10);
    let (buyer_id, buyer) = app.issuer.customer();
    app.carts.put(buyer_id, &lamp, 1);
    let first = app.place(&buyer, &order_body("tok_visa"), Some("key-1")).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    for attempt in 1..=3 {
        let retry = app.place(&buyer, &order_body("tok_visa"), Some("key-1")).await;
        assert_eq!(retry.status(), 201, "retry {attempt}");
        assert_eq!(retry.headers()["idempotent-replayed"], "true", "retry {attempt}");
        let retry: Value = retry.json().await.unwrap();
        assert_eq!(retry["id"], first["id"], "retry {attempt}: the same order comes back");
    }
    assert_eq!(app.orders_in_db().await, 1);
    assert_eq!(app.catalog.available(&lamp), 9, "held once");
    let other_body = app.place(&buyer, &order_body("tok_chargeDeclined"), Some("key-1")).await;
    assert_problem(other_body, 422, "idempotency_key_reused", "same key, other body").await;
}

/// `RATE_LIMIT_CHECKOUT` counts the orders a customer placed in the period: past it, 429 with
/// the time until the oldest leaves the window; replays of a placed order still answer, and
/// other customers are not affected.
#[tokio::test]
async fn checkouts_per_customer_are_limited_with_retry_after() {
    let app = spawn_with(|vars| vars.with("RATE_LIMIT_CHECKOUT", "2/4s")).await;
    let lamp = app.catalog.add("Lamp", 2999, "USD", 100);
    let (buyer_id, buyer) = app.issuer.customer();
    for key in ["a", "b"] {
        app.carts.put(buyer_id, &lamp, 1);
        assert_eq!(app.place(&buyer, &order_body("tok_visa"), Some(key)).await.status(), 201, "order {key}");
    }
    app.carts.put(buyer_id, &lamp, 1);
    let limited = app.place(&buyer, &order_body("tok_visa"), Some("c")).await;
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=4).contains(&retry_after), "{retry_after}");
    assert_problem(limited, 429, "rate_limited", "third order in the period").await;
    assert_eq!(app.catalog.available(&lamp), 98, "the refused checkout holds nothing");

    let replay = app.place(&buyer, &order_body("tok_visa"), Some("a")).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true", "a replay is not a new order");
    let (other_id, other) = app.issuer.customer();
    app.carts.put(other_id, &lamp, 1);
    assert_eq!(app.place(&other, &order_body("tok_visa"), None).await.status(), 201, "another customer");

    // Once the oldest order has left the window, the refused key may try again.
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    let key_c = app.place(&buyer, &order_body("tok_visa"), Some("c")).await;
    assert_eq!(key_c.status(), 201, "after Retry-After");
}

/// A request that died between claiming its key and storing the order leaves the claim with
/// no answer: retries get 409 while the lease runs, then one takes it over.
#[tokio::test]
async fn an_unanswered_idempotency_claim_is_taken_over_after_its_lease() {
    let app = spawn_app().await;
    let lamp = app.catalog.add("Lamp", 2999, "USD", 10);
    let (buyer_id, buyer) = app.issuer.customer();
    app.carts.put(buyer_id, &lamp, 1);
    let first = app.place(&buyer, &order_body("tok_visa"), Some("key-1")).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    // As if the request had died after its claim: the key has no answer.
    let pool = sqlx::PgPool::connect(app.order_db.url()).await.unwrap();
    let forget = "UPDATE idempotency_keys SET response_status = NULL, response_body = NULL";
    sqlx::query(forget).execute(&pool).await.unwrap();
    let retry = app.place(&buyer, &order_body("tok_visa"), Some("key-1")).await;
    assert_problem(retry, 409, "request_in_progress", "while the lease runs").await;

    sqlx::query("UPDATE idempotency_keys SET claimed_at = now() - interval '61 seconds'").execute(&pool).await.unwrap();
    let other_body = app.place(&buyer, &order_body("tok_chargeDeclined"), Some("key-1")).await;
    assert_problem(other_body, 422, "idempotency_key_reused", "another body never takes a claim over").await;
    let taken_over = app.place(&buyer, &order_body("tok_visa"), Some("key-1")).await;
    assert_eq!(taken_over.status(), 201, "the lease ran out: the retry places the order");
    assert!(taken_over.headers().get("idempotent-replayed").is_none());
    let taken_over: Value = taken_over.json().await.unwrap();
    assert_ne!(taken_over["id"], first["id"]);
    let replay = app.place(&buyer, &order_body("tok_visa"), Some("key-1")).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.unwrap()["id"], taken_over["id"], "later retries replay its answer");
}

#[tokio::test]
async fn bad_orders_are_refused_and_hold_nothing() {
    let app = spawn_app().await;
    let scarce = app.catalog.add("Scarce", 500, "USD", 1);
    let retired = app.catalog.add("Retired", 500, "USD", 5);
    app.catalog.set_active(&retired, false);
    let (empty_id, empty) = app.issuer.customer();
    let (short_id, short) = app.issuer.customer();
    app.carts.put(short_id, &scarce, 2);
    let (retired_id, retired_buyer) = app.issuer.customer();
    app.carts.put(retired_id, &retired, 1);
    let (unknown_id, unknown_buyer) = app.issuer.customer();
    app.carts.put(unknown_id, &uuid::Uuid::now_v7().to_string(), 1);
    let refusals = [
        ("empty cart", &empty, 409, "cart_empty"),
        ("short stock", &short, 409, "out_of_stock"),
        ("off sale", &retired_buyer, 409, "product_unavailable"),
        ("not in the catalog", &unknown_buyer, 409, "product_unavailable"),
    ];
    for (case, token, status, code) in refusals {
        assert_problem(app.place(token, &order_body("tok_visa"), None).await, status, code, case).await;
    }
    assert_eq!(app.catalog.available(&scarce), 1, "a refused order holds nothing");
    assert!(app.carts.lines(empty_id).is_empty());

    let mut bad_country = order_body("tok_visa");
    bad_country["shipping_address"]["country"] = json!("United Kingdom");
    let mut missing_postcode = order_body("tok_visa");
    missing_postcode["shipping_address"].as_object_mut().unwrap().remove("postal_code");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("bad country", bad_country, "shipping_address.country"),
        ("missing postal code", missing_postcode, "shipping_address.postal_code"),
        ("card number instead of token", order_body("4242 4242 4242 4242"), "payment.card_token"),
        ("bare card number", order_body("4242424242424242"), "payment.card_token"),
        ("dashed card number", order_body("3782-822463-10005"), "payment.card_token"),
        ("no payment", json!({"shipping_address": address()}), "payment"),
    ];
    for (case, body, field) in cases {
        let problem = assert_problem(app.place(&short, &body, None).await, 422, "validation_failed", case).await;
        assert_eq!(problem["errors"][0]["field"], field, "case {case}: {problem}");
        assert!(!problem.to_string().contains("4242") && !problem.to_string().contains("3782"), "{case}: {problem}");
    }
    let anonymous = app.client.post(app.order.url("/v1/orders")).json(&order_body("tok_visa")).send().await.unwrap();
    assert_problem(anonymous, 401, "unauthenticated", "no token").await;
    assert_eq!(app.orders_in_db().await, 0);
}
