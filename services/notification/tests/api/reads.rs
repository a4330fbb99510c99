//! Reading notifications: REST pages and the gRPC read API by user, each with REST's
//! authorization.

use serde_json::Value;
use shop_proto::shop::{
    common::v1::PageRequest,
    notification::v1::{ListUserNotificationsRequest, notification_service_client::NotificationServiceClient},
};
use shop_testkit::{grpc_request, http_client};
use tonic::{Code, transport::Channel};
use uuid::Uuid;

use crate::delivery::{TestApp, spawn};

/// `count` notifications for `user`, stored as the consumer stores them; their ids, newest
/// first.
async fn notifications(app: &TestApp, user: Uuid, count: usize) -> Vec<String> {
    let pool = sqlx::PgPool::connect(app.db.url()).await.unwrap();
    let mut ids = Vec::new();
    for index in 0..count {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO notifications (id, event_id, user_id, order_id, channel, template, subject, body, status) \
             VALUES ($1, $2, $3, $4, 'log', 'order_confirmed', $5, 'Thank you.', 'sent')",
        )
        .bind(id)
        .bind(Uuid::now_v7())
        .bind(user)
        .bind(Uuid::now_v7())
        .bind(format!("Order {index} confirmed"))
        .execute(&pool)
        .await
        .unwrap();
        ids.push(id.to_string());
    }
    ids.reverse();
    ids
}

#[tokio::test]
async fn notifications_are_read_a_page_at_a_time_and_only_by_their_owner_or_an_admin() {
    let app = spawn(None).await;
    let (ada, ada_token) = app.issuer.customer();
    let (bob, bob_token) = app.issuer.customer();
    let admin = app.issuer.admin();
    let newest_first = notifications(&app, ada, 5).await;
    notifications(&app, bob, 1).await;

    let rest = |query: String, token: Option<String>| {
        let mut request = http_client().get(app.server.url(&format!("/v1/notifications{query}")));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let (status, page) = rest(query.clone(), Some(ada_token.clone())).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(page["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, newest_first, "every notification once, newest first, none of bob's");
    for (query, status, code) in [
        ("?limit=0", 422, "validation_failed"),
        ("?limit=1000", 422, "validation_failed"),
        ("?limit=x", 422, "validation_failed"),
        ("?cursor=not-a-cursor", 400, "invalid_cursor"),
    ] {
        let (got, problem) = rest(query.to_owned(), Some(ada_token.clone())).await;
        assert_eq!((got, problem["code"].as_str()), (status, Some(code)), "{query}: {problem}");
    }
    assert_eq!(rest(String::new(), None).await.0, 401);

    let mut client =
        NotificationServiceClient::new(Channel::from_shared(app.server.url("")).unwrap().connect().await.unwrap());
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let request = ListUserNotificationsRequest {
            user_id: ada.to_string(),
            page: Some(PageRequest { limit: 2, cursor: cursor.clone() }),
        };
        let page = client.list_user_notifications(grpc_request(request, Some(&ada_token))).await.unwrap().into_inner();
        seen.extend(page.notifications.iter().map(|notification| notification.id.clone()));
        cursor = page.page.unwrap().next_cursor;
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(seen, newest_first);
    let bobs = |token: Option<&str>| {
        grpc_request(ListUserNotificationsRequest { user_id: bob.to_string(), page: None }, token)
    };
    let listed = client.list_user_notifications(bobs(Some(&admin))).await.unwrap().into_inner().notifications;
    assert_eq!(listed.len(), 1, "an admin reads anyone's");
    assert_eq!((listed[0].template.as_str(), listed[0].status.as_str()), ("order_confirmed", "sent"));
    assert_eq!(
        client.list_user_notifications(bobs(Some(&bob_token))).await.unwrap().into_inner().notifications.len(),
        1
    );
    let cases = [
        (bobs(Some(&ada_token)), Code::PermissionDenied, "another customer's"),
        (bobs(None), Code::Unauthenticated, "no token"),
        (
            grpc_request(ListUserNotificationsRequest { user_id: "42".into(), page: None }, Some(&ada_token)),
            Code::InvalidArgument,
            "bad id",
        ),
        (
            grpc_request(
                ListUserNotificationsRequest {
                    user_id: ada.to_string(),
                    page: Some(PageRequest { limit: 0, cursor: "garbage".into() }),
                },
                Some(&ada_token),
            ),
            Code::InvalidArgument,
            "bad cursor",
        ),
    ];
    for (request, code, case) in cases {
        assert_eq!(client.list_user_notifications(request).await.unwrap_err().code(), code, "{case}");
    }
}
