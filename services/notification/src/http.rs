//! `GET /v1/notifications`: the caller's notifications, newest first.

use axum::{Json, Router, extract::State, routing::get};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shop_kit::{auth::Caller, error::Problem};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::app::AppState;

pub fn router(state: AppState) -> Router {
    Router::new().route("/v1/notifications", get(list)).with_state(state)
}

#[derive(OpenApi)]
#[openapi(info(title = "Shop notification service", version = "1.0.0"), paths(list), components(schemas(Problem)))]
pub struct ApiDoc;

#[derive(Serialize, Deserialize, ToSchema, sqlx::FromRow)]
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

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Notifications {
    pub items: Vec<NotificationResponse>,
}

/// The caller's notifications (at most 100, newest first).
#[utoipa::path(get, path = "/v1/notifications", responses(
    (status = 200, body = Notifications),
    (status = 401, body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Notifications>, Problem> {
    let items = sqlx::query_as(
        "SELECT id, channel, template, subject, body, status, attempts, created_at FROM notifications \
         WHERE user_id = $1 ORDER BY id DESC LIMIT 100",
    )
    .bind(caller.user_id)
    .fetch_all(state.pool())
    .await
    .map_err(|error| Problem::internal(&error.into()))?;
    Ok(Json(Notifications { items }))
}
