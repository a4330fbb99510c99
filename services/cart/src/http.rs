//! `/v1/cart`: the caller's own cart (a token is required; nobody sees another's cart).

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use serde::Deserialize;
use shop_kit::{
    auth::Caller,
    error::{ApiJson, Problem, parse_id},
};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    app::AppState,
    domain::{CartView, Line, Quantity},
    error::Error,
    store::SetOutcome,
};

/// Every REST route of the service, each with its operation in the OpenAPI document.
pub fn api(state: AppState) -> OpenApiRouter {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(read, clear))
        .routes(routes!(set_item, remove_item))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Shop cart service", version = "1.0.0", description = "One cart per user."),
    components(schemas(shop_kit::error::Problem, shop_kit::error::FieldError, shop_kit::api::Money)),
    tags((name = "cart")),
)]
pub struct ApiDoc;

pub(crate) async fn view(state: &AppState, user_id: uuid::Uuid) -> Result<CartView, Error> {
    let lines = state.store().lines(user_id).await?;
    CartView::from_lines(lines).ok_or_else(|| Error::Internal(anyhow::anyhow!("cart total overflowed")))
}

/// The caller's cart (empty if they have none).
#[utoipa::path(get, path = "/v1/cart", tag = "cart", security(("bearer" = [])), responses(
    (status = 200, body = CartView),
    (status = 401, body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn read(State(state): State<AppState>, caller: Caller) -> Result<Json<CartView>, Error> {
    Ok(Json(view(&state, caller.user_id).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetItem {
    /// 1 to 99; replaces the line's quantity.
    #[schema(minimum = 1, maximum = 99)]
    #[serde(deserialize_with = "shop_kit::api::whole_number")]
    quantity: i64,
}

/// Put a product in the cart with this quantity (or change the quantity). The name and
/// price are taken from the product service now.
#[utoipa::path(put, path = "/v1/cart/items/{product_id}", tag = "cart", security(("bearer" = [])), request_body = SetItem,
    params(("product_id" = uuid::Uuid, Path)), responses(
    (status = 200, body = CartView),
    (status = 404, description = "product_not_found", body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "cart_full", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "bad quantity, product_unavailable, currency_mismatch", body = Problem, content_type = "application/problem+json"),
    (status = 503, description = "product_service_unavailable", body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn set_item(
    State(state): State<AppState>,
    caller: Caller,
    Path(product_id): Path<String>,
    ApiJson(body): ApiJson<SetItem>,
) -> Result<Json<CartView>, Error> {
    let product_id = parse_id(&product_id, "product_not_found")?;
    let quantity = Quantity::parse(body.quantity).map_err(|message| Error::invalid("quantity", message))?;
    let product = state.product(product_id, caller.user_id).await?;
    let line = Line {
        product_id,
        name: product.name,
        quantity: quantity.get(),
        unit_price: product.price,
        set_at_ms: chrono::Utc::now().timestamp_millis(),
    };
    match state.store().set(caller.user_id, &line).await? {
        SetOutcome::Set => Ok(Json(view(&state, caller.user_id).await?)),
        SetOutcome::CurrencyMismatch { cart } => Err(Error::CurrencyMismatch { cart }),
        SetOutcome::Full => Err(Error::TooManyLines { max: state.store().max_lines() }),
    }
}

/// Take a product out of the cart.
#[utoipa::path(delete, path = "/v1/cart/items/{product_id}", tag = "cart", security(("bearer" = [])),
    params(("product_id" = uuid::Uuid, Path)), responses(
    (status = 200, body = CartView),
    (status = 404, description = "line_not_found", body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn remove_item(
    State(state): State<AppState>,
    caller: Caller,
    Path(product_id): Path<String>,
) -> Result<Json<CartView>, Error> {
    let product_id = parse_id(&product_id, "line_not_found")?;
    if !state.store().remove(caller.user_id, product_id).await? {
        return Err(Error::LineNotFound);
    }
    Ok(Json(view(&state, caller.user_id).await?))
}

/// Empty the cart.
#[utoipa::path(delete, path = "/v1/cart", tag = "cart", security(("bearer" = [])), responses((status = 204)))]
pub(crate) async fn clear(State(state): State<AppState>, caller: Caller) -> Result<StatusCode, Error> {
    state.store().clear(caller.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
