use reqwest::{Method, Response};
use serde_json::{Value, json};
use shop_kit::config::Vars;
use shop_testkit::{TestDb, TestIssuer, TestRedis, TestServer, http_client};

pub(crate) struct TestApp {
    pub(crate) cart: TestServer,
    pub(crate) product: TestServer,
    pub(crate) client: reqwest::Client,
    pub(crate) issuer: TestIssuer,
    pub(crate) admin: String,
    _db: TestDb,
    _redis: (TestRedis, TestRedis),
}

/// The cart and product services, the cart pricing from the product service.
pub(crate) async fn spawn_app() -> TestApp {
    let issuer = TestIssuer::start().await;
    let topic_prefix = format!("t{}.", uuid::Uuid::now_v7().simple());
    let db = TestDb::new().await;
    let (product_redis, cart_redis) = (TestRedis::new(), TestRedis::new());
    let product_vars = Vars::from_pairs([
        ("DATABASE_URL", db.url().to_owned()),
        ("REDIS_URL", product_redis.url()),
        ("REDIS_KEY_PREFIX", product_redis.prefix().to_owned()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("JWKS_URL", issuer.jwks_url()),
        ("KAFKA_BROKERS", std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())),
        ("KAFKA_TOPIC_PREFIX", format!("t{}.", uuid::Uuid::now_v7().simple())),
        ("KAFKA_CREATE_TOPICS", "true".to_owned()),
    ]);
    let product =
        product_service::app::build(product_service::config::Config::from_vars(&product_vars).unwrap()).await.unwrap();
    let product = TestServer::spawn(product.local_addr(), |shutdown| product.run(shutdown));
    let cart_vars = Vars::from_pairs([
        ("REDIS_URL", cart_redis.url()),
        ("REDIS_KEY_PREFIX", cart_redis.prefix().to_owned()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("JWKS_URL", issuer.jwks_url()),
        ("PRODUCT_GRPC_URL", product.url("")),
        ("KAFKA_BROKERS", std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())),
        ("KAFKA_TOPIC_PREFIX", topic_prefix),
        ("KAFKA_CREATE_TOPICS", "true".to_owned()),
    ]);
    let cart =
        cart_service::app::build(cart_service::config::Config::from_vars(&issuer.client("cart", cart_vars)).unwrap())
            .await
            .unwrap();
    let cart = TestServer::spawn(cart.local_addr(), |shutdown| cart.run(shutdown));
    let admin = issuer.admin();
    TestApp { cart, product, client: http_client(), issuer, admin, _db: db, _redis: (product_redis, cart_redis) }
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

    /// A product for sale; returns its id.
    pub(crate) async fn product(&self, sku: &str, amount: i64, currency: &str) -> String {
        let body = json!({"sku": sku, "name": format!("Product {sku}"), "price": {"amount": amount, "currency": currency}, "stock": 100});
        let response = self
            .client
            .post(self.product.url("/v1/products"))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "create {sku}");
        response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn admin_product(&self, method: Method, path: &str, body: Option<Value>) {
        let mut request = self.client.request(method, self.product.url(path)).bearer_auth(&self.admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        assert!(request.send().await.unwrap().status().is_success());
    }
}

pub(crate) async fn assert_problem(response: Response, status: u16, code: &str, case: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "case {case}: status");
    assert_eq!(response.headers()["content-type"], "application/problem+json", "case {case}");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], code, "case {case}: {problem}");
    problem
}
