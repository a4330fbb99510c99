use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use shop_kit::{auth::SigningKey, config::Vars};
use shop_testkit::{TestDb, TestRedis, TestServer, http_client};
use user_service::{app, config::Config, http::TokenResponse};

pub(crate) const ADMIN_EMAIL: &str = "admin@shop.test";
pub(crate) const ADMIN_PASSWORD: &str = "admin-password";

pub(crate) struct TestApp {
    pub(crate) server: TestServer,
    pub(crate) client: reqwest::Client,
    /// The PEM of the service's signing key, to forge tokens in tests.
    pub(crate) signing_pem: String,
    pub(crate) db: TestDb,
    /// Prepended to this app's topic names.
    pub(crate) topic_prefix: String,
    /// This app's Redis key prefix (another app given it shares the limits).
    pub(crate) redis_prefix: String,
    pub(crate) _redis: TestRedis,
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_with(|vars| vars).await
}

pub(crate) async fn spawn_with(customize: impl FnOnce(Vars) -> Vars) -> TestApp {
    shop_testkit::init_tracing();
    let db = TestDb::new().await;
    let redis = TestRedis::new();
    let (_, signing_pem) = SigningKey::generate().unwrap();
    let topic_prefix = format!("t{}.", uuid::Uuid::now_v7().simple());
    let vars = Vars::from_pairs([
        ("DATABASE_URL", db.url().to_owned()),
        ("DATABASE_MAX_CONNECTIONS", "5".to_owned()),
        ("REDIS_URL", redis.url()),
        ("REDIS_KEY_PREFIX", redis.prefix().to_owned()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("JWT_SIGNING_KEY", signing_pem.clone()),
        ("SHOP_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
        ("SHOP_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
        ("KAFKA_BROKERS", std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())),
        ("KAFKA_TOPIC_PREFIX", topic_prefix.clone()),
        ("KAFKA_CREATE_TOPICS", "true".to_owned()),
        // Tests register many accounts from one address; the limits' own tests set theirs.
        ("RATE_LIMIT_REGISTER", "1000/1m".to_owned()),
        ("RATE_LIMIT_LOGIN", "1000/1m".to_owned()),
    ]);
    let config = Config::from_vars(&customize(vars)).unwrap();
    let app = app::build(config).await.unwrap();
    let server = TestServer::spawn(app.local_addr(), |shutdown| app.run(shutdown));
    let redis_prefix = redis.prefix().to_owned();
    TestApp { server, client: http_client(), signing_pem, db, topic_prefix, redis_prefix, _redis: redis }
}

impl TestApp {
    pub(crate) fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Response {
        self.client.post(self.url(path)).json(body).send().await.unwrap()
    }

    pub(crate) async fn register(&self, email: &str, password: &str, name: &str) -> Response {
        self.post("/v1/users", &json!({"email": email, "password": password, "name": name})).await
    }

    pub(crate) async fn login(&self, email: &str, password: &str) -> Response {
        self.post("/v1/auth/login", &json!({"email": email, "password": password})).await
    }

    /// A login sent from the local address `from` (127.0.0.2 and up are distinct clients).
    pub(crate) async fn login_from(&self, from: [u8; 4], email: &str, password: &str) -> Response {
        let client = reqwest::Client::builder().no_proxy().local_address(std::net::IpAddr::from(from)).build().unwrap();
        client
            .post(self.url("/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }

    /// A request sent through a proxy that recorded `client` in `X-Forwarded-For` (the app
    /// needs `TRUSTED_PROXY_HOPS=1`), after an address the client made up itself.
    pub(crate) async fn post_via_proxy(&self, client: &str, path: &str, body: &Value) -> Response {
        let forwarded = format!("198.18.0.66, {client}");
        self.client.post(self.url(path)).header("x-forwarded-for", forwarded).json(body).send().await.unwrap()
    }

    pub(crate) async fn login_via_proxy(&self, client: &str, email: &str, password: &str) -> Response {
        self.post_via_proxy(client, "/v1/auth/login", &json!({"email": email, "password": password})).await
    }

    pub(crate) async fn refresh(&self, token: String) -> Response {
        self.post("/v1/auth/refresh", &json!({"refresh_token": token})).await
    }

    /// Registers a customer and logs in; returns (user id, tokens).
    pub(crate) async fn customer(&self, email: &str) -> (String, TokenResponse) {
        let created = self.register(email, "password-123", "Test Customer").await;
        assert_eq!(created.status(), StatusCode::CREATED);
        let user: Value = created.json().await.unwrap();
        let tokens = self.login(email, "password-123").await;
        assert_eq!(tokens.status(), StatusCode::OK);
        (user["id"].as_str().unwrap().to_owned(), tokens.json().await.unwrap())
    }

    pub(crate) async fn admin(&self) -> TokenResponse {
        let response = self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    pub(crate) async fn get_with_token(&self, path: &str, token: &str) -> Response {
        self.client.get(self.url(path)).bearer_auth(token).send().await.unwrap()
    }
}

/// Asserts `response` is a problem+json with this status and code; returns the document.
pub(crate) async fn assert_problem(response: Response, status: u16, code: &str, case: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "case {case}: status");
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/problem+json"), "case {case}: content type");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], code, "case {case}: {problem}");
    assert_eq!(problem["status"], status, "case {case}");
    problem
}
