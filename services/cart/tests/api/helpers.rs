use reqwest::{Method, Response};
use serde_json::{Value, json};
use shop_kit::config::Vars;
use shop_testkit::{TestIssuer, TestRedis, TestServer, http_client, standins::Catalog};

/// The cart service alone, pricing from a stand-in catalog.
pub(crate) struct TestApp {
    pub(crate) cart: TestServer,
    pub(crate) catalog: Catalog,
    pub(crate) client: reqwest::Client,
    pub(crate) issuer: TestIssuer,
    pub(crate) admin: String,
    pub(crate) topic_prefix: String,
    pub(crate) cart_redis: TestRedis,
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_with(|vars| vars).await
}

pub(crate) async fn spawn_with(customize: impl FnOnce(Vars) -> Vars) -> TestApp {
    let issuer = TestIssuer::start().await;
    let catalog = Catalog::start();
    let topic_prefix = format!("t{}.", uuid::Uuid::now_v7().simple());
    let cart_redis = TestRedis::new();
    let cart_vars = Vars::from_pairs([
        ("REDIS_URL", cart_redis.url()),
        ("REDIS_KEY_PREFIX", cart_redis.prefix().to_owned()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("JWKS_URL", issuer.jwks_url()),
        ("PRODUCT_GRPC_URL", catalog.url()),
        ("KAFKA_BROKERS", std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())),
        ("KAFKA_TOPIC_PREFIX", topic_prefix.clone()),
        ("KAFKA_CREATE_TOPICS", "true".to_owned()),
    ]);
    let cart = cart_service::app::build(
        cart_service::config::Config::from_vars(&customize(issuer.client("cart", cart_vars))).unwrap(),
    )
    .await
    .unwrap();
    let cart = TestServer::spawn(cart.local_addr(), |shutdown| cart.run(shutdown));
    let admin = issuer.admin();
    TestApp { cart, catalog, client: http_client(), issuer, admin, topic_prefix, cart_redis }
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

    pub(crate) async fn view(&self, token: &str) -> Value {
        let response = self.cart(Method::GET, "/v1/cart", Some(token), None).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// A product for sale in the stand-in catalog; returns its id.
    pub(crate) fn product(&self, sku: &str, amount: i64, currency: &str) -> String {
        self.catalog.add(&format!("Product {sku}"), amount, currency, 100)
    }
}

pub(crate) async fn assert_problem(response: Response, status: u16, code: &str, case: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "case {case}: status");
    assert_eq!(response.headers()["content-type"], "application/problem+json", "case {case}");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], code, "case {case}: {problem}");
    problem
}
