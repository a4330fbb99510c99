use reqwest::{Method, Response};
use serde_json::{Value, json};
use shop_kit::config::Vars;
use shop_testkit::{
    TestDb, TestIssuer, TestServer, http_client,
    standins::{Carts, Catalog},
};

/// The order service alone, with stand-ins for the cart and product services.
pub(crate) struct TestApp {
    pub(crate) order: TestServer,
    pub(crate) catalog: Catalog,
    pub(crate) carts: Carts,
    pub(crate) client: reqwest::Client,
    pub(crate) issuer: TestIssuer,
    pub(crate) admin: String,
    pub(crate) topic_prefix: String,
    pub(crate) order_db: TestDb,
}

pub(crate) fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_with(|vars| vars).await
}

pub(crate) async fn spawn_with(customize: impl FnOnce(Vars) -> Vars) -> TestApp {
    let issuer = TestIssuer::start().await;
    let (catalog, carts) = (Catalog::start(), Carts::start());
    let order_db = TestDb::new().await;
    let topic_prefix = format!("t{}.", uuid::Uuid::now_v7().simple());
    let vars = Vars::from_pairs([
        ("DATABASE_URL", order_db.url().to_owned()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("JWKS_URL", issuer.jwks_url()),
        ("CART_GRPC_URL", carts.url()),
        ("PRODUCT_GRPC_URL", catalog.url()),
        ("KAFKA_BROKERS", brokers()),
        ("KAFKA_TOPIC_PREFIX", topic_prefix.clone()),
        ("KAFKA_CREATE_TOPICS", "true".to_owned()),
    ]);
    let config = order_service::config::Config::from_vars(&customize(issuer.client("order", vars))).unwrap();
    let order = order_service::app::build(config).await.unwrap();
    let order = TestServer::spawn(order.local_addr(), |shutdown| order.run(shutdown));
    let admin = issuer.admin();
    TestApp { order, catalog, carts, client: http_client(), issuer, admin, topic_prefix, order_db }
}

pub(crate) fn address() -> Value {
    json!({"name": "Ada Lovelace", "line1": "12 St James's Square", "city": "London", "postal_code": "SW1Y 4JH", "country": "GB"})
}

pub(crate) fn order_body(card: &str) -> Value {
    json!({"shipping_address": address(), "payment": {"card_token": card}})
}

impl TestApp {
    pub(crate) async fn call(&self, method: Method, path: &str, token: Option<&str>) -> Response {
        let mut request = self.client.request(method, self.order.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    pub(crate) async fn place(&self, token: &str, body: &Value, key: Option<&str>) -> Response {
        let mut request = self.client.post(self.order.url("/v1/orders")).bearer_auth(token).json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.unwrap()
    }

    /// Places an order of `quantity` of `product` for a new customer; returns (token, order).
    pub(crate) async fn placed(&self, product: &str, quantity: i64) -> (String, Value) {
        let (buyer_id, buyer) = self.issuer.customer();
        self.carts.put(buyer_id, product, quantity);
        let response = self.place(&buyer, &order_body("tok_visa"), None).await;
        assert_eq!(response.status(), 201, "place an order");
        (buyer, response.json().await.unwrap())
    }

    /// Waits until the order reaches `status`; returns it.
    pub(crate) async fn order_becomes(&self, token: &str, id: &str, status: &str) -> Value {
        shop_testkit::eventually(
            &format!("order {id} to become {status}"),
            std::time::Duration::from_secs(60),
            || async {
                let order: Value =
                    self.call(Method::GET, &format!("/v1/orders/{id}"), Some(token)).await.json().await.ok()?;
                (order["status"] == status).then_some(order)
            },
        )
        .await
    }

    pub(crate) async fn orders_in_db(&self) -> i64 {
        let pool = sqlx::PgPool::connect(self.order_db.url()).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&pool).await.unwrap()
    }

    /// Publishes a payment event, as the payment service would, to this app's payment topic.
    pub(crate) async fn publish_payment(&self, name: &str, order_id: &str, payload: Vec<u8>) {
        use rdkafka::{
            message::{Header, OwnedHeaders},
            producer::FutureRecord,
        };
        let producer = shop_kit::events::KafkaConfig::for_brokers(&brokers()).producer().unwrap();
        let (id, ce_type) = (uuid::Uuid::now_v7().to_string(), format!("shop.payment.v1.{name}"));
        let headers = OwnedHeaders::new()
            .insert(Header { key: "ce_id", value: Some(id.as_str()) })
            .insert(Header { key: "ce_type", value: Some(ce_type.as_str()) })
            .insert(Header { key: "ce_source", value: Some("/shop/payment") });
        let topic = format!("{}shop.payment.v1", self.topic_prefix);
        let record = FutureRecord::to(&topic).key(order_id).payload(&payload).headers(headers);
        producer.send(record, std::time::Duration::from_secs(5)).await.unwrap();
    }
}

pub(crate) async fn assert_problem(response: Response, status: u16, code: &str, case: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "case {case}: status");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], code, "case {case}: {problem}");
    problem
}
