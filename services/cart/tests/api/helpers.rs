use reqwest::{Method, Response};
use serde_json::{Value, json};
use shop_kit::config::Vars;
use shop_testkit::{TestIssuer, TestRedis, TestServer, http_client};

pub(crate) struct TestApp {
    pub(crate) cart: TestServer,
    pub(crate) client: reqwest::Client,
    pub(crate) issuer: TestIssuer,
    _cart_redis: TestRedis,
}

/// The cart service alone; `customize` sets its product service (`PRODUCT_GRPC_URL`).
pub(crate) async fn spawn_with(customize: impl FnOnce(Vars) -> Vars) -> TestApp {
    let issuer = TestIssuer::start().await;
    let topic_prefix = format!("t{}.", uuid::Uuid::now_v7().simple());
    let cart_redis = TestRedis::new();
    let cart_vars = Vars::from_pairs([
        ("REDIS_URL", cart_redis.url()),
        ("REDIS_KEY_PREFIX", cart_redis.prefix().to_owned()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("JWKS_URL", issuer.jwks_url()),
        ("KAFKA_BROKERS", std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())),
        ("KAFKA_TOPIC_PREFIX", topic_prefix),
        ("KAFKA_CREATE_TOPICS", "true".to_owned()),
    ]);
    let cart =
        cart_service::app::Application::build(cart_service::config::Config::from_vars(&customize(cart_vars)).unwrap())
            .await
            .unwrap();
    let cart = TestServer::spawn(cart.local_addr(), |shutdown| cart.run(shutdown));
    TestApp { cart, client: http_client(), issuer, _cart_redis: cart_redis }
}

impl TestApp {
    pub(crate) async fn cart(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Response {
        let mut request = self.client.request(method, self.cart.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    pub(crate) async fn set(&self, token: &str, product_id: &str, quantity: Value) -> Response {
        self.cart(
            Method::PUT,
            &format!("/v1/cart/items/{product_id}"),
            Some(token),
            Some(json!({"quantity": quantity})),
        )
        .await
    }
}

pub(crate) async fn assert_problem(response: Response, status: u16, code: &str, case: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "case {case}: status");
    assert_eq!(response.headers()["content-type"], "application/problem+json", "case {case}");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], code, "case {case}: {problem}");
    problem
}
