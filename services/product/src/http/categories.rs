//! `GET /v1/categories`.

use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{app::AppState, error::Error, store::products::Category};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/categories", get(list))
}

#[derive(Serialize, ToSchema)]
pub(super) struct Categories {
    items: Vec<Category>,
}

/// Every category, with how many listed products it has.
#[utoipa::path(get, path = "/v1/categories", tag = "categories", responses((status = 200, body = Categories)))]
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Categories>, Error> {
    let mut connection = state.pool().acquire().await?;
    Ok(Json(Categories { items: crate::store::products::categories(&mut connection).await? }))
}
