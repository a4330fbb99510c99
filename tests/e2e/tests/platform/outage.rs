//! A broker outage with all six services up: every service stays ready (degraded, not
//! unready), checkout keeps taking orders, and when the broker returns every order placed
//! meanwhile is confirmed. The readiness body is public: it names each check and its state,
//! never an error text.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use shop_testkit::{TestServer, eventually};

use crate::helpers::{Platform, TestApp, order_body, spawn_with};

fn services(app: &TestApp) -> Vec<(&'static str, &TestServer)> {
    let mut services = vec![("product", &app.product), ("cart", &app.cart), ("order", &app.order)];
    services.extend(app.payment.as_ref().map(|server| ("payment", server)));
    services.extend(app.user.as_ref().map(|server| ("user", server)));
    services.extend(app.notification.as_ref().map(|server| ("notification", server)));
    services
}

/// Every service's `/readyz`, once the kafka check reads `kafka` (`ok` or `failing`): each
/// must answer 200 with the overall status `overall`.
async fn every_service_is(app: &TestApp, kafka: &str, overall: &str) {
    for (name, server) in services(app) {
        let body = eventually(&format!("{name}'s kafka check to be {kafka}"), Duration::from_secs(30), || async {
            let response = app.client.get(server.url("/readyz")).send().await.ok()?;
            assert_eq!(response.status(), 200, "{name} must stay ready (kafka {kafka})");
            let body: Value = response.json().await.ok()?;
            (body["checks"]["kafka"]["status"] == kafka).then_some(body)
        })
        .await;
        assert_eq!(body["status"], overall, "{name}: {body}");
        assert_eq!(body["checks"]["kafka"]["required"], false, "{name}: {body}");
        for (check, state) in body["checks"].as_object().unwrap() {
            let keys: Vec<&String> = state.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["required", "status"], "{name}'s {check} check shows no more than its state: {body}");
        }
        if kafka == "failing" {
            let metrics = app.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
            assert!(
                metrics.contains(r#"readiness_check_passing{check="kafka",required="false"} 0"#),
                "{name}'s metrics show the failing check:\n{metrics}"
            );
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_broker_outage_leaves_every_service_ready_and_loses_no_order() {
    let broker = shop_testkit::TestBroker::start().await;
    crate::helpers::use_brokers(&broker.address());
    let app = spawn_with(Platform::AllSix).await;
    let product = app.product("OUTAGE", 900, 50).await;
    // One order settles before the outage: every consumer has joined its group.
    let token = app.register("before@shop.test").await;
    app.add_to_cart(&token, &product, 1).await;
    let placed = app.place(&token, &order_body("tok_visa"), None).await;
    assert_eq!(placed.status(), 201);
    let id = placed.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    app.order_becomes(&token, &id, "confirmed").await;
    every_service_is(&app, "ok", "ready").await;

    broker.cut();
    every_service_is(&app, "failing", "degraded").await;
    // Customers register, fill carts and check out while the broker is away.
    let mut orders = Vec::new();
    for index in 0..5 {
        let token = app.register(&format!("during-{index}@shop.test")).await;
        app.add_to_cart(&token, &product, 2).await;
        let placed = app.place(&token, &order_body("tok_visa"), None).await;
        assert_eq!(placed.status(), 201, "checkout takes orders during a broker outage");
        let order: Value = placed.json().await.unwrap();
        assert_eq!(order["status"], "pending_payment");
        orders.push((token, order["id"].as_str().unwrap().to_owned()));
    }
    every_service_is(&app, "failing", "degraded").await;

    broker.restore();
    for (token, id) in &orders {
        let order =
            shop_testkit::eventually(&format!("order {id} to be confirmed"), Duration::from_secs(120), || async {
                let order: Value = app
                    .call(&app.order, Method::GET, &format!("/v1/orders/{id}"), Some(token), None)
                    .await
                    .json()
                    .await
                    .ok()?;
                (order["status"] != "pending_payment").then_some(order)
            })
            .await;
        assert_eq!(order["status"], "confirmed", "{order}");
    }
    // OrderPlaced, waiting in the order service's outbox during the outage, empties the carts.
    for (token, _) in &orders {
        eventually("the cart to be emptied", Duration::from_secs(60), || async {
            let cart: Value =
                app.call(&app.cart, Method::GET, "/v1/cart", Some(token), None).await.json().await.ok()?;
            (cart["items"].as_array().map(Vec::len) == Some(0)).then_some(())
        })
        .await;
    }
    every_service_is(&app, "ok", "ready").await;
    assert_eq!(app.available(&product).await, 50 - 1 - 2 * 5, "every order's stock is sold");
    app.stop().await;
}
