//! Reading payments: REST pages and the gRPC read API (by order, by user), each with REST's
//! authorization, against the service in-process on real Postgres.

use serde_json::Value;
use shop_kit::config::Vars;
use shop_proto::shop::{
    common::v1::PageRequest,
    payment::v1::{GetOrderPaymentRequest, ListUserPaymentsRequest, payment_service_client::PaymentServiceClient},
};
use shop_testkit::{TestDb, TestIssuer, TestServer, grpc_request, http_client};
use tonic::{Code, transport::Channel};
use uuid::Uuid;

pub(crate) struct App {
    pub(crate) server: TestServer,
    pub(crate) issuer: TestIssuer,
    pub(crate) db: TestDb,
    pub(crate) prefix: String,
}

/// The payment service in-process, on its own database and topic prefix.
pub(crate) async fn spawn() -> App {
    spawn_with(&[]).await
}

/// [`spawn`] with more settings.
pub(crate) async fn spawn_with(extra: &[(&str, &str)]) -> App {
    let issuer = TestIssuer::start().await;
    let db = TestDb::new().await;
    let prefix = format!("t{}.", Uuid::now_v7().simple());
    let mut vars = Vars::from_pairs([
        ("DATABASE_URL", db.url().to_owned()),
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("JWKS_URL", issuer.jwks_url()),
        ("KAFKA_BROKERS", std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())),
        ("KAFKA_TOPIC_PREFIX", prefix.clone()),
        ("KAFKA_CREATE_TOPICS", "true".to_owned()),
        // A charge whose attempts failed is declined 1 s later (not 60 s).
        ("PAYMENT_DECLINE_AFTER", "1s".to_owned()),
    ]);
    for (name, value) in extra {
        vars = vars.with(name, *value);
    }
    let app = payment_service::app::build(payment_service::config::Config::from_vars(&vars).unwrap()).await.unwrap();
    let server = TestServer::spawn(app.local_addr(), |shutdown| app.run(shutdown));
    App { server, issuer, db, prefix }
}

impl App {
    /// `count` payments of `user`'s orders, stored as the consumer stores them; their order
    /// ids, oldest first.
    async fn payments(&self, user: Uuid, count: usize) -> Vec<Uuid> {
        let pool = sqlx::PgPool::connect(self.db.url()).await.unwrap();
        let mut orders = Vec::new();
        for index in 0..count {
            let order = Uuid::now_v7();
            let (status, reason) = if index % 3 == 2 { ("failed", Some("card_declined")) } else { ("succeeded", None) };
            sqlx::query(
                "INSERT INTO payments (id, order_id, user_id, amount, currency, status, failure_reason, attempts) \
                 VALUES ($1, $2, $3, $4, 'USD', $5, $6, 1)",
            )
            .bind(Uuid::now_v7())
            .bind(order)
            .bind(user)
            .bind(1000 + index as i64)
            .bind(status)
            .bind(reason)
            .execute(&pool)
            .await
            .unwrap();
            orders.push(order);
        }
        orders
    }

    async fn rest(&self, query: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = http_client().get(self.server.url(&format!("/v1/payments{query}")));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    async fn grpc(&self) -> PaymentServiceClient<Channel> {
        PaymentServiceClient::new(Channel::from_shared(self.server.url("")).unwrap().connect().await.unwrap())
    }
}

fn order_ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|item| item["order_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn payments_are_read_a_page_at_a_time_and_only_by_their_owner_or_an_admin() {
    let app = spawn().await;
    let (ada, ada_token) = app.issuer.customer();
    let (bob, bob_token) = app.issuer.customer();
    let admin = app.issuer.admin();
    let ada_orders = app.payments(ada, 5).await;
    let bob_orders = app.payments(bob, 1).await;
    let newest_first: Vec<String> = ada_orders.iter().rev().map(Uuid::to_string).collect();

    // REST: pages of two, newest first, until next_cursor is null.
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let (status, page) = app.rest(&query, Some(&ada_token)).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(order_ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, newest_first, "every payment once, newest first");
    let (_, page) = app.rest(&format!("?order_id={}", bob_orders[0]), Some(&ada_token)).await;
    assert_eq!(order_ids(&page), Vec::<String>::new(), "another customer's payment is not listed");
    let (_, page) = app.rest("", Some(&admin)).await;
    assert_eq!(order_ids(&page).len(), 6, "an admin sees every payment");
    for (query, status, code) in [
        ("?limit=0", 422, "validation_failed"),
        ("?limit=101", 422, "validation_failed"),
        ("?cursor=not-a-cursor", 400, "invalid_cursor"),
        ("?order_id=42", 422, "validation_failed"),
    ] {
        let (got, problem) = app.rest(query, Some(&ada_token)).await;
        assert_eq!((got, problem["code"].as_str()), (status, Some(code)), "{query}: {problem}");
    }
    assert_eq!(app.rest("", None).await.0, 401);

    // gRPC: by user, the same pages.
    let mut client = app.grpc().await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let request = ListUserPaymentsRequest {
            user_id: ada.to_string(),
            page: Some(PageRequest { limit: 2, cursor: cursor.clone() }),
        };
        let page = client.list_user_payments(grpc_request(request, Some(&ada_token))).await.unwrap().into_inner();
        assert!(page.payments.len() <= 2);
        seen.extend(page.payments.iter().map(|payment| payment.order_id.clone()));
        cursor = page.page.unwrap().next_cursor;
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(seen, newest_first);
    let bobs =
        |token: Option<&str>| grpc_request(ListUserPaymentsRequest { user_id: bob.to_string(), page: None }, token);
    let listed = client.list_user_payments(bobs(Some(&admin))).await.unwrap().into_inner();
    assert_eq!(listed.payments.len(), 1, "an admin reads anyone's");
    assert_eq!(listed.payments[0].amount.as_ref().unwrap().amount, 1000);
    assert_eq!(client.list_user_payments(bobs(Some(&bob_token))).await.unwrap().into_inner().payments.len(), 1);
    let refused = client.list_user_payments(bobs(Some(&ada_token))).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "another customer's payments");
    assert_eq!(client.list_user_payments(bobs(None)).await.unwrap_err().code(), Code::Unauthenticated);
    let bad_page = ListUserPaymentsRequest {
        user_id: ada.to_string(),
        page: Some(PageRequest { limit: 101, cursor: String::new() }),
    };
    let refused = client.list_user_payments(grpc_request(bad_page, Some(&ada_token))).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);

    // gRPC: by order.
    let by_order =
        |order: &Uuid, token: Option<&str>| grpc_request(GetOrderPaymentRequest { order_id: order.to_string() }, token);
    let declined = client.get_order_payment(by_order(&ada_orders[2], Some(&ada_token))).await.unwrap().into_inner();
    let declined = declined.payment.unwrap();
    assert_eq!((declined.status.as_str(), declined.failure_reason.as_str()), ("failed", "card_declined"));
    assert_eq!(declined.user_id, ada.to_string());
    assert!(client.get_order_payment(by_order(&ada_orders[0], Some(&admin))).await.is_ok(), "an admin reads any");
    let cases = [
        (by_order(&bob_orders[0], Some(&ada_token)), Code::NotFound, "another customer's payment"),
        (by_order(&Uuid::now_v7(), Some(&ada_token)), Code::NotFound, "an order with no payment"),
        (by_order(&ada_orders[0], None), Code::Unauthenticated, "no token"),
        (
            grpc_request(GetOrderPaymentRequest { order_id: "42".into() }, Some(&ada_token)),
            Code::InvalidArgument,
            "bad id",
        ),
    ];
    for (request, code, case) in cases {
        assert_eq!(client.get_order_payment(request).await.unwrap_err().code(), code, "{case}");
    }
}
