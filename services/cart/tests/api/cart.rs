use reqwest::Method;
use serde_json::json;

use crate::helpers::{assert_problem, spawn_with};

#[tokio::test]
async fn a_product_service_outage_is_a_503_and_reads_still_work() {
    let app =
        spawn_with(|vars| vars.with("PRODUCT_GRPC_URL", "http://127.0.0.1:9").with("PRODUCT_DEADLINE", "500ms")).await;
    let (_, ada) = app.issuer.customer();
    let id = uuid::Uuid::now_v7().to_string();
    assert_problem(app.set(&ada, &id, json!(1)).await, 503, "product_service_unavailable", "down").await;
    assert_eq!(app.cart(Method::GET, "/v1/cart", Some(&ada), None).await.status(), 200);
}
