//! The REST API: `/v1/products` and `/v1/categories`.

use axum::Router;
use shop_kit::server::BearerAuth;
use utoipa::OpenApi;

use crate::app::AppState;

mod categories;
mod products;

pub use products::ProductResponse;

pub fn router(state: AppState) -> Router {
    Router::new().merge(products::router()).merge(categories::router()).with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Shop product service", version = "1.0.0", description = "Catalog, search, categories and stock."),
    paths(products::list, products::read, products::create, products::update, products::delete, products::set_stock, categories::list),
    components(schemas(shop_kit::error::Problem, shop_kit::error::FieldError, shop_kit::api::Money)),
    modifiers(&BearerAuth),
    tags((name = "products"), (name = "categories")),
)]
pub struct ApiDoc;
