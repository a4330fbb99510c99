//! The REST API: one module per resource, each with its `router()`, merged here.

use axum::Router;
use shop_kit::server::BearerAuth;
use utoipa::OpenApi;

use crate::app::AppState;

mod auth;
mod users;

pub use auth::TokenResponse;
pub use users::UserResponse;

/// Counts one request against `limit` for `key`: 429 with `Retry-After` when over it.
async fn within(limit: &shop_kit::ratelimit::Limit, key: &str) -> Result<(), crate::error::Error> {
    match limit.check(key).await {
        shop_kit::ratelimit::Decision::Allowed => Ok(()),
        shop_kit::ratelimit::Decision::Limited { retry_after } => Err(crate::error::Error::RateLimited {
            retry_after_secs: shop_kit::ratelimit::Decision::retry_after_secs(retry_after),
        }),
    }
}

/// Every REST route of the service.
pub fn router(state: AppState) -> Router {
    Router::new().merge(users::router()).merge(auth::router()).with_state(state)
}

/// The OpenAPI document served at `/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(title = "Shop user service", version = "1.0.0", description = "Accounts, credentials and tokens."),
    paths(
        users::register, users::get_me, users::update_me, users::get_user,
        auth::login, auth::refresh, auth::logout, auth::jwks,
    ),
    components(schemas(shop_kit::error::Problem, shop_kit::error::FieldError, shop_kit::auth::Role)),
    modifiers(&BearerAuth),
    tags((name = "users"), (name = "auth")),
)]
pub struct ApiDoc;
