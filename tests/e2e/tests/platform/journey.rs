//! All six services, the real broker, Postgres and Redis, and a real SMTP server: a buyer
//! registers (user), shops (product, cart), checks out (order), pays (payment), is told
//! (notification), cancels and is refunded; a second order is shipped and delivered.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Platform, order_body, spawn_with};

#[tokio::test]
async fn a_customer_journey_through_all_six_services() {
    let app = spawn_with(Platform::AllSix).await;
    let smtp = app.smtp.as_ref().unwrap();
    let notification = app.notification.as_ref().unwrap();
    let lamp = app.product("LAMP", 2500, 10).await;
    let token = app.register("ada@example.com").await;
    shop_testkit::eventually("the welcome email", Duration::from_secs(30), || async {
        smtp.messages()
            .iter()
            .any(|m| m.contains("Subject: Welcome to Shop") && m.contains("To: ada@example.com"))
            .then_some(())
    })
    .await;

    app.add_to_cart(&token, &lamp, 2).await;
    let placed = app.place(&token, &order_body("tok_visa"), Some("journey-1")).await;
    assert_eq!(placed.status(), 201);
    let order: Value = placed.json().await.unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    let replay: Value = app.place(&token, &order_body("tok_visa"), Some("journey-1")).await.json().await.unwrap();
    assert_eq!(replay["id"], id.as_str(), "an idempotent replay returns the same order");

    app.order_becomes(&token, &id, "confirmed").await;
    shop_testkit::eventually("the confirmation email", Duration::from_secs(30), || async {
        smtp.messages()
            .iter()
            .any(|m| m.contains(&format!("Subject: Order {id} is confirmed")) && m.contains("50.00 USD"))
            .then_some(())
    })
    .await;
    let cart: Value = app.call(&app.cart, Method::GET, "/v1/cart", Some(&token), None).await.json().await.unwrap();
    assert_eq!(cart["items"], json!([]), "the ordered lines left the cart");

    let cancelled: Value = app
        .call(&app.order, Method::POST, &format!("/v1/orders/{id}/cancel"), Some(&token), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    shop_testkit::eventually("the refund email", Duration::from_secs(30), || async {
        smtp.messages().iter().any(|m| m.contains(&format!("Subject: Refund for order {id}"))).then_some(())
    })
    .await;
    let stored: Value =
        app.call(notification, Method::GET, "/v1/notifications", Some(&token), None).await.json().await.unwrap();
    let mut templates: Vec<&str> =
        stored["items"].as_array().unwrap().iter().map(|n| n["template"].as_str().unwrap()).collect();
    templates.sort_unstable();
    assert_eq!(templates, ["order_cancelled", "order_confirmed", "payment_refunded", "welcome"]);
    shop_testkit::eventually("the units back on hand", Duration::from_secs(30), || async {
        (app.available(&lamp).await == 10).then_some(())
    })
    .await;

    // A second order is paid, shipped by an admin and delivered; it can no longer be cancelled.
    app.add_to_cart(&token, &lamp, 1).await;
    let placed = app.place(&token, &order_body("tok_visa"), None).await;
    assert_eq!(placed.status(), 201);
    let second = placed.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    app.order_becomes(&token, &second, "confirmed").await;
    let body = json!({"carrier": "DHL", "tracking_number": "JD0146-0001"});
    let path = format!("/v1/orders/{second}/ship");
    let refused = app.call(&app.order, Method::POST, &path, Some(&token), Some(&body)).await;
    assert_eq!(refused.status(), 403, "a customer does not ship");
    let shipped: Value =
        app.call(&app.order, Method::POST, &path, Some(&app.admin), Some(&body)).await.json().await.unwrap();
    assert_eq!(shipped["status"], "shipped", "{shipped}");
    shop_testkit::eventually("the shipping email", Duration::from_secs(30), || async {
        smtp.messages()
            .iter()
            .any(|m| m.contains(&format!("Subject: Order {second} is on its way")) && m.contains("JD0146-0001"))
            .then_some(())
    })
    .await;
    let cancel = format!("/v1/orders/{second}/cancel");
    assert_eq!(app.call(&app.order, Method::POST, &cancel, Some(&token), None).await.status(), 409);
    let deliver = format!("/v1/orders/{second}/deliver");
    let delivered: Value =
        app.call(&app.order, Method::POST, &deliver, Some(&app.admin), None).await.json().await.unwrap();
    assert_eq!(delivered["status"], "delivered");
    assert_eq!(app.available(&lamp).await, 9, "the shipped unit stays sold");
}
