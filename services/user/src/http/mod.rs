//! The REST API: one module per resource, each with its `router()`, merged here.

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

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

/// Every REST route of the service, each with its operation in the OpenAPI document.
pub fn api(state: AppState) -> OpenApiRouter {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(users::router()).merge(auth::router()).with_state(state)
}

/// The OpenAPI document's frame; the operations come from the routes ([`api`]).
#[derive(OpenApi)]
#[openapi(
    info(title = "Shop user service", version = "1.0.0", description = "Accounts, credentials and tokens."),
    components(schemas(shop_kit::auth::Role)),
    tags((name = "users"), (name = "auth")),
    modifiers(&ClientBasic),
)]
pub struct ApiDoc;

/// The `client_basic` scheme: a service's id and secret on the token endpoint.
struct ClientBasic;

impl utoipa::Modify for ClientBasic {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi.components.get_or_insert_with(utoipa::openapi::Components::new).add_security_scheme(
            "client_basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}
