//! `GET /v1/categories`.

use axum::{extract::State, http::HeaderMap, response::Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{app::AppState, error::Error, store::products::Category};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Serialize, ToSchema)]
pub(super) struct Categories {
    items: Vec<Category>,
}

/// How long a client or a shared cache may reuse the category list: it changes when an admin
/// adds a category or a product's listing, and a minute late is harmless there.
const CATEGORIES_MAX_AGE: &str = "public, max-age=60";

/// Every category, with how many listed products it has. The answer carries an `ETag` and
/// `Cache-Control: public, max-age=60`; `If-None-Match` with the current ETag gets 304.
#[utoipa::path(get, path = "/v1/categories", tag = "categories", responses(
    (status = 200, body = Categories, headers(("ETag" = String), ("Cache-Control" = String))),
    (status = 304, description = "unchanged since the ETag in If-None-Match"),
))]
pub(super) async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Error> {
    let mut connection = state.pool().acquire().await?;
    let categories = Categories { items: crate::store::products::categories(&mut connection).await? };
    let body = serde_json::to_vec(&categories).map_err(|error| Error::Internal(error.into()))?;
    Ok(super::cacheable_json(&headers, body, CATEGORIES_MAX_AGE))
}
