//! A calling service's tokens (ADR 0012) against the test issuer's token endpoint (shop-kit's
//! own issuer): one per callee, cached, still used while the issuer is down, and a clear
//! UNAVAILABLE when none can be had.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly on purpose")]

use shop_kit::{
    auth::{ServiceCredentials, ServiceTokens},
    config::Vars,
};
use shop_testkit::TestIssuer;

fn claims(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn a_service_gets_one_cached_token_per_callee_and_keeps_it_through_an_issuer_outage() {
    let issuer = TestIssuer::start().await;
    let vars = issuer.client("order", Vars::default());
    let tokens = ServiceTokens::new(ServiceCredentials::from_vars(&vars, "order-service").unwrap()).unwrap();

    let product = tokens.token("product").await.unwrap();
    assert_eq!(claims(&product)["sub"], "order");
    assert_eq!(claims(&product)["aud"], "service:product");
    assert_eq!(tokens.token("product").await.unwrap(), product, "cached, not fetched again");
    let cart = tokens.token("cart").await.unwrap();
    assert_eq!(claims(&cart)["aud"], "service:cart");

    issuer.stop().await;
    assert_eq!(tokens.token("product").await.unwrap(), product, "still valid while the issuer is down");
    let none = tokens.token("user").await.unwrap_err();
    assert_eq!(none.code(), tonic::Code::Unavailable);
    assert!(none.message().contains("no service token for calls to user"), "{}", none.message());
}

#[tokio::test]
async fn a_wrong_secret_gets_no_token_and_says_why() {
    let issuer = TestIssuer::start().await;
    let vars = issuer.client("order", Vars::default()).with("SERVICE_CLIENT_SECRET", "w".repeat(40));
    let tokens = ServiceTokens::new(ServiceCredentials::from_vars(&vars, "order").unwrap()).unwrap();
    let refused = tokens.token("product").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert!(refused.message().contains("401") && refused.message().contains("invalid_client"), "{}", refused.message());
}

#[tokio::test]
async fn a_call_without_a_token_fails_unavailable_without_being_sent() {
    use shop_proto::shop::product::v1::{GetProductRequest, product_service_client::ProductServiceClient};
    let issuer = TestIssuer::start().await;
    let vars = issuer.client("cart", Vars::default()).with("SERVICE_CLIENT_SECRET", "w".repeat(40));
    let tokens = ServiceTokens::new(ServiceCredentials::from_vars(&vars, "cart").unwrap()).unwrap();
    // Nothing listens there: had the call been sent, it would fail otherwise.
    let channel =
        shop_kit::grpc::outbound("http://127.0.0.1:9", std::time::Duration::from_secs(2), &tokens, "product").unwrap();
    let status =
        ProductServiceClient::new(channel).get_product(GetProductRequest { product_id: "x".into() }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("no service token for calls to product"), "{}", status.message());
}
