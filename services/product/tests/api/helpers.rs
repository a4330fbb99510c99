use product_service::{app, config::Config};
use reqwest::Response;
use serde_json::{Value, json};
use shop_kit::config::Vars;
use shop_proto::shop::product::v1::product_service_client::ProductServiceClient;
use shop_testkit::{TestDb, TestIssuer, TestRedis, TestServer, http_client};
use tonic::transport::Channel;

pub(crate) struct TestApp {
    pub(crate) server: TestServer,
    pub(crate) client: reqwest::Client,
    pub(crate) issuer: TestIssuer,
    pub(crate) admin: String,
    pub(crate) db: TestDb,
    pub(crate) redis: TestRedis,
    pub(crate) topic_prefix: String,
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_with(|vars| vars).await
}

pub(crate) async fn spawn_with(customize: impl FnOnce(Vars) -> Vars) -> TestApp {
    let issuer = TestIssuer::start().await;
    let topic_prefix = format!("t{}.", uuid::Uuid::now_v7().simple());
    let db = TestDb::new().await;
    let redis = TestRedis::new();
    let vars = customize(vars_for(&db, &redis, &issuer, &topic_prefix));
    let app = app::build(Config::from_vars(&vars).unwrap()).await.unwrap();
    let server = TestServer::spawn(app.local_addr(), |shutdown| app.run(shutdown));
    let admin = issuer.admin();
    TestApp { server, client: http_client(), issuer, admin, db, redis, topic_prefix }
}

/// A second replica of `app`'s service: the same database, Redis keys, topics and keys.
pub(crate) async fn spawn_replica(app: &TestApp, customize: impl FnOnce(Vars) -> Vars) -> TestServer {
    let vars = customize(vars_for(&app.db, &app.redis, &app.issuer, &app.topic_prefix));
    let replica = app::build(Config::from_vars(&vars).unwrap()).await.unwrap();
    TestServer::spawn(replica.local_addr(), |shutdown| replica.run(shutdown))
}

fn vars_for(db: &TestDb, redis: &TestRedis, issuer: &TestIssuer, topic_prefix: &str) -> Vars {
    Vars::from_pairs([
        ("DATABASE_URL", db.url().to_owned()),
        ("DATABASE_MAX_CONNECTIONS", "20".to_owned()),
        ("REDIS_URL", redis.url()),
        ("REDIS_KEY_PREFIX", redis.prefix().to_owned()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("JWKS_URL", issuer.jwks_url()),
        ("KAFKA_BROKERS", std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())),
        ("KAFKA_TOPIC_PREFIX", topic_prefix.to_owned()),
        ("KAFKA_CREATE_TOPICS", "true".to_owned()),
    ])
}

impl TestApp {
    pub(crate) fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    pub(crate) async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.unwrap()
    }

    /// Creates a product as admin; returns its JSON.
    pub(crate) async fn create(&self, sku: &str, name: &str, description: &str, stock: i64) -> Value {
        let body = json!({"sku": sku, "name": name, "description": description,
            "price": {"amount": 1999, "currency": "USD"}, "categories": ["testing"], "stock": stock});
        let response = self.send(reqwest::Method::POST, "/v1/products", Some(&self.admin), Some(&body)).await;
        assert_eq!(response.status(), 201, "create {sku}");
        response.json().await.unwrap()
    }

    pub(crate) async fn grpc(&self) -> ProductServiceClient<Channel> {
        ProductServiceClient::new(Channel::from_shared(self.url("")).unwrap().connect().await.unwrap())
    }

    pub(crate) async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(self.db.url()).await.unwrap()
    }
}

pub(crate) async fn assert_problem(response: Response, status: u16, code: &str, case: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "case {case}: status");
    assert_eq!(response.headers()["content-type"], "application/problem+json", "case {case}");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], code, "case {case}: {problem}");
    problem
}

pub(crate) fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    shop_kit::grpc::with_bearer(tonic::Request::new(message), token)
}

/// As the checkout calls: with `token` and for a customer (`shop-acting-for`).
pub(crate) fn as_checkout<T>(message: T, token: &str) -> tonic::Request<T> {
    shop_kit::grpc::acting_for(authorized(message, token), uuid::Uuid::now_v7())
}
