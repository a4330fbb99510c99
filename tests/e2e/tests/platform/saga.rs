//! The checkout saga end to end: order → payment → order → product, over the real broker.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{TestApp, order_body, spawn_app};

async fn payments(app: &TestApp, token: &str, order_id: &str) -> Vec<Value> {
    let page: Value = app
        .call(
            app.payment.as_ref().unwrap(),
            Method::GET,
            &format!("/v1/payments?order_id={order_id}"),
            Some(token),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().clone()
}

async fn on_hand_and_reserved(app: &TestApp, product: &str) -> (i64, i64) {
    let pool = sqlx::PgPool::connect(app.product_db.url()).await.unwrap();
    sqlx::query_as("SELECT on_hand::bigint, reserved::bigint FROM inventory WHERE product_id = $1::uuid")
        .bind(product)
        .fetch_one(&pool)
        .await
        .unwrap()
}

async fn place(app: &TestApp, token: &str, product: &str, quantity: i64, card: &str) -> String {
    app.add_to_cart(token, product, quantity).await;
    let response = app.place(token, &order_body(card), None).await;
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_paid_order_is_confirmed_and_its_stock_sold() {
    let app = spawn_app().await;
    let lamp = app.product("LAMP", 2999, 10).await;
    let (_, buyer) = app.issuer.customer();
    let id = place(&app, &buyer, &lamp, 2, "tok_visa").await;
    app.order_becomes(&buyer, &id, "confirmed").await;
    let paid = payments(&app, &buyer, &id).await;
    assert_eq!(paid.len(), 1);
    assert_eq!(paid[0]["status"], "succeeded");
    assert_eq!(paid[0]["amount"]["amount"], 2 * 2999);
    shop_testkit::eventually("the hold to be sold", Duration::from_secs(30), || async {
        (app.reservation_statuses(&id).await == ["committed"]).then_some(())
    })
    .await;
    assert_eq!(on_hand_and_reserved(&app, &lamp).await, (8, 0));
    shop_testkit::eventually("the cart to be emptied by OrderPlaced", Duration::from_secs(30), || async {
        let cart: Value = app.call(&app.cart, Method::GET, "/v1/cart", Some(&buyer), None).await.json().await.ok()?;
        cart["items"].as_array()?.is_empty().then_some(())
    })
    .await;
    let (_, stranger) = app.issuer.customer();
    assert!(payments(&app, &stranger, &id).await.is_empty(), "payments are private");
}

#[tokio::test]
async fn declined_and_failing_cards_cancel_the_order_and_release_the_stock() {
    let app = spawn_app().await;
    let lamp = app.product("LAMP", 2999, 10).await;
    for (card, reason) in [
        ("tok_chargeDeclined", "card_declined"),
        ("tok_insufficientFunds", "insufficient_funds"),
        ("tok_processingError", "processing_error"),
    ] {
        let (_, buyer) = app.issuer.customer();
        let id = place(&app, &buyer, &lamp, 3, card).await;
        let order = app.order_becomes(&buyer, &id, "cancelled").await;
        assert_eq!(order["failure_reason"], reason, "card {card}");
        let paid = payments(&app, &buyer, &id).await;
        assert_eq!(paid[0]["status"], "failed", "card {card}");
        assert_eq!(paid[0]["failure_reason"], reason, "card {card}");
        shop_testkit::eventually("the hold to be released", Duration::from_secs(30), || async {
            (app.reservation_statuses(&id).await == ["released"]).then_some(())
        })
        .await;
    }
    assert_eq!(on_hand_and_reserved(&app, &lamp).await, (10, 0), "nothing sold, nothing held");
}

#[tokio::test]
async fn cancelling_a_confirmed_order_refunds_it_and_restocks() {
    let app = spawn_app().await;
    let lamp = app.product("LAMP", 2999, 10).await;
    let (_, buyer) = app.issuer.customer();
    let id = place(&app, &buyer, &lamp, 4, "tok_visa").await;
    app.order_becomes(&buyer, &id, "confirmed").await;
    shop_testkit::eventually("the sale", Duration::from_secs(30), || async {
        (app.reservation_statuses(&id).await == ["committed"]).then_some(())
    })
    .await;
    let cancelled: Value = app
        .call(&app.order, Method::POST, &format!("/v1/orders/{id}/cancel"), Some(&buyer), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    shop_testkit::eventually("the refund", Duration::from_secs(30), || async {
        (payments(&app, &buyer, &id).await.first()?["status"] == "refunded").then_some(())
    })
    .await;
    shop_testkit::eventually("the units back on hand", Duration::from_secs(30), || async {
        (on_hand_and_reserved(&app, &lamp).await == (10, 0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn every_order_of_a_rush_ends_confirmed_or_cancelled_and_stock_balances() {
    let app = spawn_app().await;
    let scarce = app.product("SCARCE", 999, 5).await;
    let cards = [
        "tok_visa",
        "tok_chargeDeclined",
        "tok_visa",
        "tok_insufficientFunds",
        "tok_visa",
        "tok_visa",
        "tok_visa",
        "tok_visa",
    ];
    let mut placed = Vec::new();
    for card in cards {
        let (_, buyer) = app.issuer.customer();
        app.add_to_cart(&buyer, &scarce, 1).await;
        let response = app.place(&buyer, &order_body(card), None).await;
        if response.status() == 201 {
            placed.push((buyer, response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned(), card));
        }
    }
    let mut confirmed = 0;
    for (buyer, id, card) in &placed {
        let final_status = shop_testkit::eventually("a final status", Duration::from_secs(60), || async {
            let order: Value = app
                .call(&app.order, Method::GET, &format!("/v1/orders/{id}"), Some(buyer), None)
                .await
                .json()
                .await
                .ok()?;
            let status = order["status"].as_str()?.to_owned();
            (status != "pending_payment").then_some(status)
        })
        .await;
        assert_eq!(final_status == "confirmed", *card == "tok_visa", "order {id} with {card}");
        if final_status == "confirmed" {
            confirmed += 1;
            let paid = payments(&app, buyer, id).await;
            assert_eq!(paid.iter().filter(|p| p["status"] == "succeeded").count(), 1, "exactly one succeeded payment");
        }
    }
    shop_testkit::eventually("stock to settle", Duration::from_secs(30), || async {
        let (on_hand, reserved) = on_hand_and_reserved(&app, &scarce).await;
        (reserved == 0 && on_hand == 5 - confirmed).then_some(())
    })
    .await;
    assert!(confirmed <= 5, "never more sold than there was");
}
