//! `GET /v1/notifications?limit=&cursor=`: the caller's notifications, newest first, a page
//! at a time.

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shop_kit::{
    api::{Page, decode_cursor, encode_cursor, page_limit},
    auth::Caller,
    error::{FieldError, Problem},
};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{app::AppState, domain::Notification, error::Error, store};

/// Every REST route of the service, each with its operation in the OpenAPI document.
pub fn api(state: AppState) -> OpenApiRouter {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).routes(routes!(list)).with_state(state)
}

#[derive(OpenApi)]
#[openapi(info(title = "Shop notification service", version = "1.0.0"), components(schemas(Problem, FieldError)))]
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page: opaque, only what this API returned (400 otherwise).
    cursor: Option<String>,
}

/// The caller's notifications, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", security(("bearer" = [])), params(ListParams), responses(
    (status = 200, body = Page<NotificationResponse>),
    (status = 400, body = Problem, content_type = "application/problem+json"),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page<NotificationResponse>>, Error> {
    let Query(params) = params.map_err(|_| Error::invalid("limit", "must be a whole number between 1 and 100"))?;
    let limit = page_limit(params.limit)?;
    let before: Option<Uuid> = params.cursor.as_deref().map(decode_cursor).transpose()?.flatten();
    let mut connection = state.pool().acquire().await?;
    let (notifications, next) = store::page_for_user(&mut connection, caller.user_id, before, limit).await?;
    Ok(Json(Page {
        items: notifications.into_iter().map(NotificationResponse::from).collect(),
        next_cursor: next.as_ref().map(encode_cursor),
    }))
}
