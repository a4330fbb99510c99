use reqwest::{Method, Response};
use serde_json::{Value, json};
use shop_kit::config::Vars;
use shop_testkit::{SmtpSink, TestDb, TestIssuer, TestRedis, TestServer, http_client};

pub(crate) struct TestApp {
    pub(crate) order: TestServer,
    pub(crate) product: TestServer,
    pub(crate) cart: TestServer,
    pub(crate) payment: Option<TestServer>,
    pub(crate) client: reqwest::Client,
    pub(crate) issuer: TestIssuer,
    pub(crate) admin: String,
    pub(crate) topic_prefix: String,
    pub(crate) order_db: TestDb,
    pub(crate) product_db: TestDb,
    pub(crate) payment_db: TestDb,
    /// Where every service fetches token keys: the test issuer's, or the user service's.
    pub(crate) jwks_url: String,
    /// The user and notification services and the mail they send (all-six mode only).
    pub(crate) user: Option<TestServer>,
    pub(crate) notification: Option<TestServer>,
    pub(crate) smtp: Option<SmtpSink>,
    _redis: (TestRedis, TestRedis),
    _extra: (Vec<TestDb>, Vec<TestRedis>),
}

fn brokers() -> String {
    BROKERS
        .with(|brokers| brokers.borrow().clone())
        .unwrap_or_else(|| std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()))
}

thread_local! {
    /// A test's own broker, when it runs one (the broker-restart test).
    static BROKERS: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Makes the apps this thread spawns use `brokers`.
pub(crate) fn use_brokers(brokers: &str) {
    BROKERS.with(|slot| *slot.borrow_mut() = Some(brokers.to_owned()));
}

/// Which services the harness runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Platform {
    /// product, cart, order and payment; tokens from a test issuer.
    Standard,
    /// As Standard without payment: the test runs (and crashes) its own.
    WithoutPayment,
    /// All six: the user service issues the tokens, notifications go to an SMTP server.
    AllSix,
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_with(Platform::Standard).await
}

/// The payment service's configuration for this app.
pub(crate) fn payment_vars(payment_db: &TestDb, jwks_url: &str, topic_prefix: &str) -> Vars {
    Vars::from_pairs([
        ("DATABASE_URL", payment_db.url().to_owned()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("JWKS_URL", jwks_url.to_owned()),
        ("KAFKA_BROKERS", brokers()),
        ("KAFKA_TOPIC_PREFIX", topic_prefix.to_owned()),
        ("KAFKA_CREATE_TOPICS", "true".to_owned()),
        // A charge whose attempts failed is declined 1 s later (not 60 s), and a payment a
        // crashed worker had claimed is taken over after 22 s (3 × 2 + 2 + 3 × 3 + 5), not 70.
        ("PAYMENT_DECLINE_AFTER", "1s".to_owned()),
        ("PAYMENT_PROVIDER_TIMEOUT", "2s".to_owned()),
        ("DATABASE_ACQUIRE_TIMEOUT", "2s".to_owned()),
        ("DATABASE_STATEMENT_TIMEOUT", "3s".to_owned()),
    ])
}

pub(crate) const ADMIN_EMAIL: &str = "admin@shop.test";
const ADMIN_PASSWORD: &str = "admin-password";

/// The user service (all-six mode): its server, database and Redis.
async fn start_user_service(issuer: &TestIssuer, topic_prefix: &str) -> (TestServer, TestDb, TestRedis) {
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    // The services' secrets, as the chart mounts them: read at start, then removed.
    let clients = issuer.write_clients_dir();
    let (_, signing_pem) = shop_kit::auth::SigningKey::generate().unwrap();
    let vars = Vars::from_pairs([
        ("DATABASE_URL", db.url().to_owned()),
        ("REDIS_URL", redis.url()),
        ("REDIS_KEY_PREFIX", redis.prefix().to_owned()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("JWT_SIGNING_KEY", signing_pem),
        ("SHOP_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
        ("SHOP_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
        ("KAFKA_BROKERS", brokers()),
        ("KAFKA_TOPIC_PREFIX", topic_prefix.to_owned()),
        ("KAFKA_CREATE_TOPICS", "true".to_owned()),
        ("SERVICE_CLIENTS_DIR", clients.display().to_string()),
    ]);
    let config = user_service::config::Config::from_vars(&vars).unwrap();
    std::fs::remove_dir_all(&clients).unwrap();
    let app = user_service::app::build(config).await.unwrap();
    (TestServer::spawn(app.local_addr(), |shutdown| app.run(shutdown)), db, redis)
}

async fn login(client: &reqwest::Client, user: &TestServer, email: &str, password: &str) -> String {
    let body = json!({"email": email, "password": password});
    let tokens: Value = client.post(user.url("/v1/auth/login")).json(&body).send().await.unwrap().json().await.unwrap();
    tokens["access_token"].as_str().unwrap().to_owned()
}

pub(crate) async fn spawn_with(platform: Platform) -> TestApp {
    let issuer = TestIssuer::start().await;
    let (product_db, order_db, payment_db) = (TestDb::new().await, TestDb::new().await, TestDb::new().await);
    let (product_redis, cart_redis) = (TestRedis::new(), TestRedis::new());
    let topic_prefix = format!("t{}.", uuid::Uuid::now_v7().simple());
    let (mut extra_dbs, mut extra_redis) = (Vec::new(), Vec::new());
    let user = match platform {
        Platform::AllSix => {
            let (server, db, redis) = start_user_service(&issuer, &topic_prefix).await;
            extra_dbs.push(db);
            extra_redis.push(redis);
            Some(server)
        }
        Platform::Standard | Platform::WithoutPayment => None,
    };
    let jwks_url = user.as_ref().map_or_else(|| issuer.jwks_url(), |user| user.url("/.well-known/jwks.json"));
    // cart and order get their service tokens from the user service when it runs (same
    // secrets), from the test issuer otherwise.
    let client = |service: &str, vars: Vars| {
        let vars = issuer.client(service, vars);
        match &user {
            Some(user) => vars.with("SERVICE_TOKEN_URL", user.url("/v1/oauth/token")),
            None => vars,
        }
    };
    let common = |redis: &TestRedis| {
        Vars::from_pairs([
            ("REDIS_URL", redis.url()),
            ("REDIS_KEY_PREFIX", redis.prefix().to_owned()),
            ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("JWKS_URL", jwks_url.clone()),
        ])
    };
    let product_vars = common(&product_redis)
        .with("DATABASE_URL", product_db.url())
        .with("DATABASE_MAX_CONNECTIONS", "20")
        .with("KAFKA_BROKERS", brokers())
        .with("KAFKA_TOPIC_PREFIX", topic_prefix.clone())
        .with("KAFKA_CREATE_TOPICS", "true");
    let product =
        product_service::app::build(product_service::config::Config::from_vars(&product_vars).unwrap()).await.unwrap();
    let product = TestServer::spawn(product.local_addr(), |shutdown| product.run(shutdown));
    let cart_vars = common(&cart_redis)
        .with("PRODUCT_GRPC_URL", product.url(""))
        .with("KAFKA_BROKERS", brokers())
        .with("KAFKA_TOPIC_PREFIX", topic_prefix.clone())
        .with("KAFKA_CREATE_TOPICS", "true");
    let cart = cart_service::app::build(cart_service::config::Config::from_vars(&client("cart", cart_vars)).unwrap())
        .await
        .unwrap();
    let cart = TestServer::spawn(cart.local_addr(), |shutdown| cart.run(shutdown));
    let order_vars = Vars::from_pairs([
        ("DATABASE_URL", order_db.url().to_owned()),
        ("DATABASE_MAX_CONNECTIONS", "20".to_owned()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("JWKS_URL", jwks_url.clone()),
        ("CART_GRPC_URL", cart.url("")),
        ("PRODUCT_GRPC_URL", product.url("")),
        ("KAFKA_BROKERS", brokers()),
        ("KAFKA_TOPIC_PREFIX", topic_prefix.clone()),
        ("KAFKA_CREATE_TOPICS", "true".to_owned()),
    ]);
    let order =
        order_service::app::build(order_service::config::Config::from_vars(&client("order", order_vars)).unwrap())
            .await
            .unwrap();
    let order = TestServer::spawn(order.local_addr(), |shutdown| order.run(shutdown));
    let payment = match platform {
        Platform::WithoutPayment => None,
        Platform::Standard | Platform::AllSix => {
            let config =
                payment_service::config::Config::from_vars(&payment_vars(&payment_db, &jwks_url, &topic_prefix))
                    .unwrap();
            let payment = payment_service::app::build(config).await.unwrap();
            Some(TestServer::spawn(payment.local_addr(), |shutdown| payment.run(shutdown)))
        }
    };
    let (notification, smtp) = match platform {
        Platform::AllSix => {
            let (smtp, db) = (SmtpSink::start().await, TestDb::new().await);
            let vars = Vars::from_pairs([
                ("DATABASE_URL", db.url().to_owned()),
                ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
                ("JWKS_URL", jwks_url.clone()),
                ("KAFKA_BROKERS", brokers()),
                ("KAFKA_TOPIC_PREFIX", topic_prefix.clone()),
                ("KAFKA_CREATE_TOPICS", "true".to_owned()),
                ("SMTP_URL", smtp.url()),
            ]);
            extra_dbs.push(db);
            let config = notification_service::config::Config::from_vars(&vars).unwrap();
            let app = notification_service::app::build(config).await.unwrap();
            (Some(TestServer::spawn(app.local_addr(), |shutdown| app.run(shutdown))), Some(smtp))
        }
        Platform::Standard | Platform::WithoutPayment => (None, None),
    };
    let client = http_client();
    let admin = match &user {
        Some(user) => login(&client, user, ADMIN_EMAIL, ADMIN_PASSWORD).await,
        None => issuer.admin(),
    };
    TestApp {
        order,
        product,
        cart,
        payment,
        client,
        jwks_url,
        user,
        notification,
        smtp,
        _extra: (extra_dbs, extra_redis),
        issuer,
        admin,
        topic_prefix,
        order_db,
        product_db,
        payment_db,
        _redis: (product_redis, cart_redis),
    }
}

pub(crate) fn address() -> Value {
    json!({"name": "Ada Lovelace", "line1": "12 St James's Square", "city": "London", "postal_code": "SW1Y 4JH", "country": "GB"})
}

pub(crate) fn order_body(card: &str) -> Value {
    json!({"shipping_address": address(), "payment": {"card_token": card}})
}

impl TestApp {
    /// Stops every service, each draining and closing its consumers, while the broker is still
    /// up. A test that owns its broker calls it last: left to the end of the test, the services'
    /// tasks are dropped after the broker, and dropping a consumer whose broker is gone blocks
    /// in librdkafka's close.
    pub(crate) async fn stop(self) {
        let servers =
            [Some(self.order), Some(self.product), Some(self.cart), self.payment, self.user, self.notification];
        for server in servers.into_iter().flatten() {
            server.stop().await.unwrap();
        }
    }

    pub(crate) async fn call(
        &self,
        server: &TestServer,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let mut request = self.client.request(method, server.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.unwrap()
    }

    /// A product with `stock` units; returns its id.
    pub(crate) async fn product(&self, sku: &str, amount: i64, stock: i64) -> String {
        let body = json!({"sku": sku, "name": format!("Product {sku}"), "price": {"amount": amount, "currency": "USD"}, "stock": stock});
        let response = self.call(&self.product, Method::POST, "/v1/products", Some(&self.admin), Some(&body)).await;
        assert_eq!(response.status(), 201);
        response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn add_to_cart(&self, token: &str, product: &str, quantity: i64) {
        let path = format!("/v1/cart/items/{product}");
        let response =
            self.call(&self.cart, Method::PUT, &path, Some(token), Some(&json!({"quantity": quantity}))).await;
        assert_eq!(response.status(), 200, "add to cart");
    }

    pub(crate) async fn place(&self, token: &str, body: &Value, key: Option<&str>) -> Response {
        let mut request = self.client.post(self.order.url("/v1/orders")).bearer_auth(token).json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.unwrap()
    }

    pub(crate) async fn available(&self, product: &str) -> i64 {
        let read: Value = self
            .call(&self.product, Method::GET, &format!("/v1/products/{product}"), None, None)
            .await
            .json()
            .await
            .unwrap();
        read["stock_available"].as_i64().unwrap()
    }

    /// Waits until the order reaches `status`; returns it.
    pub(crate) async fn order_becomes(&self, token: &str, id: &str, status: &str) -> Value {
        shop_testkit::eventually(
            &format!("order {id} to become {status}"),
            std::time::Duration::from_secs(60),
            || async {
                let order: Value = self
                    .call(&self.order, Method::GET, &format!("/v1/orders/{id}"), Some(token), None)
                    .await
                    .json()
                    .await
                    .ok()?;
                (order["status"] == status).then_some(order)
            },
        )
        .await
    }

    /// The statuses of an order's reservations in the product database.
    pub(crate) async fn reservation_statuses(&self, order_id: &str) -> Vec<String> {
        let pool = sqlx::PgPool::connect(self.product_db.url()).await.unwrap();
        sqlx::query_scalar("SELECT DISTINCT status FROM reservations WHERE order_id = $1::uuid")
            .bind(order_id)
            .fetch_all(&pool)
            .await
            .unwrap()
    }

    /// Registers and logs in a customer through the user service (all-six mode).
    pub(crate) async fn register(&self, email: &str) -> String {
        let user = self.user.as_ref().expect("the user service runs in all-six mode");
        let body = json!({"email": email, "password": "password-123", "name": "Ada Lovelace"});
        assert_eq!(self.client.post(user.url("/v1/users")).json(&body).send().await.unwrap().status(), 201);
        login(&self.client, user, email, "password-123").await
    }

    pub(crate) async fn orders_in_db(&self) -> i64 {
        let pool = sqlx::PgPool::connect(self.order_db.url()).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&pool).await.unwrap()
    }
}

pub(crate) async fn assert_problem(response: Response, status: u16, code: &str, case: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "case {case}: status");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], code, "case {case}: {problem}");
    problem
}
