//! `GET /v1/notifications`: the caller's notifications, newest first.

use axum::{Json, Router, extract::State, routing::get};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shop_kit::{auth::Caller, error::Problem};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::{app::AppState, domain::Notification, error::Error, store};

pub fn router(state: AppState) -> Router {
    Router::new().route("/v1/notifications", get(list)).with_state(state)
}

#[derive(OpenApi)]
#[openapi(info(title = "Shop notification service", version = "1.0.0"), paths(list), components(schemas(Problem)))]
pub struct ApiDoc;

#[derive(Serialize, Deserialize, ToSchema)]
pub struct NotificationResponse {
    pub id: Uuid,
    /// email or log.
    pub channel: String,
    pub template: String,
    pub subject: String,
    pub body: String,
    /// pending, sent or failed.
    pub status: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

impl From<Notification> for NotificationResponse {
    fn from(notification: Notification) -> Self {
        Self {
            id: notification.id,
            channel: notification.channel.as_str().to_owned(),
            template: notification.template,
            subject: notification.subject,
            body: notification.body,
            status: notification.status.as_str().to_owned(),
            attempts: i32::try_from(notification.attempts).unwrap_or(i32::MAX),
            created_at: notification.created_at,
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Notifications {
    pub items: Vec<NotificationResponse>,
}

/// The caller's notifications (at most 100, newest first).
#[utoipa::path(get, path = "/v1/notifications", responses(
    (status = 200, body = Notifications),
    (status = 401, body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Notifications>, Error> {
    let mut connection = state.pool().acquire().await?;
    let notifications = store::list_for_user(&mut connection, caller.user_id).await?;
    Ok(Json(Notifications { items: notifications.into_iter().map(NotificationResponse::from).collect() }))
}
