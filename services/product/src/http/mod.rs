//! The REST API: `/v1/products` and `/v1/categories`.

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

mod categories;
mod products;

pub use products::ProductResponse;

use axum::{
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse as _, Response},
};

/// A strong ETag for a response body: its SHA-256's first 12 bytes, hex, quoted.
fn etag_of(body: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(body);
    format!("\"{}\"", digest[..12].iter().map(|byte| format!("{byte:02x}")).collect::<String>())
}

/// Whether the `If-None-Match` or `If-Match` list in `headers` names `etag` (or is `*`).
/// `If-None-Match` compares weakly (a `W/` tag matches its strong twin), `If-Match` strongly
/// (RFC 9110 §13.1.1-2).
fn list_names(headers: &HeaderMap, name: header::HeaderName, etag: &str) -> bool {
    let weak = name == header::IF_NONE_MATCH;
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter_map(|tag| match tag.strip_prefix("W/") {
            Some(strong) => weak.then_some(strong),
            None => Some(tag),
        })
        .any(|tag| tag == etag || tag == "*")
}

/// A JSON read that caches: `ETag` and `Cache-Control: <cache_control>` on 200, and 304 with no
/// body when `If-None-Match` names the current ETag.
fn cacheable_json(headers: &HeaderMap, body: Vec<u8>, cache_control: &'static str) -> Response {
    let etag = etag_of(&body);
    let matches = list_names(headers, header::IF_NONE_MATCH, &etag);
    let cache = [(header::ETAG, etag), (header::CACHE_CONTROL, cache_control.to_owned())];
    if matches {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (cache, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Every REST route of the service, each with its operation in the OpenAPI document.
pub fn api(state: AppState) -> OpenApiRouter {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(products::router())
        .merge(categories::router())
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Shop product service", version = "1.0.0", description = "Catalog, search, categories and stock."),
    components(schemas(shop_kit::error::Problem, shop_kit::error::FieldError, shop_kit::api::Money)),
    tags((name = "products"), (name = "categories")),
)]
pub struct ApiDoc;
