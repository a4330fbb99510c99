//! `/v1/products`: public reads and search; admin writes and stock.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{StatusCode, header},
    response::IntoResponse,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shop_kit::{
    api::{Money, MoneyInput, Page, decode_cursor, encode_cursor, page_limit},
    auth::Admin,
    error::{ApiJson, FieldError, Problem, parse_id},
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    app::AppState,
    domain::{Description, ImageUrl, ProductName, SearchTerms, Sku, Slug, StockLevel},
    error::Error,
    store::{self, Listing, NewProduct, Product, ProductChanges, products::Position},
};

/// Writes `ProductChanged` for `product` into the outbox, in the caller's transaction.
async fn product_changed(
    state: &AppState,
    connection: &mut sqlx::PgConnection,
    product: &Product,
    deleted: bool,
) -> Result<(), Error> {
    let message = shop_proto::shop::events::v1::ProductChanged {
        product_id: product.id.to_string(),
        sku: product.sku.clone(),
        name: product.name.clone(),
        price: Some(shop_proto::shop::common::v1::Money {
            amount: product.price_amount,
            currency: product.currency.clone(),
        }),
        categories: product.categories.clone(),
        active: product.active && !deleted,
        deleted,
    };
    let event = state.topics().event(product.id.to_string(), &message);
    shop_kit::events::enqueue(connection, &event).await?;
    Ok(())
}

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(read, update, delete)).routes(routes!(set_stock))
}

/// A product as clients see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductResponse {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price: Money,
    /// Category slugs.
    pub categories: Vec<String>,
    /// on_hand − reserved.
    pub stock_available: i64,
    pub image_url: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Product> for ProductResponse {
    fn from(product: Product) -> Self {
        Self {
            id: product.id,
            sku: product.sku,
            name: product.name,
            description: product.description,
            price: Money { amount: product.price_amount, currency: product.currency },
            categories: product.categories,
            stock_available: product.stock_available,
            image_url: product.image_url,
            active: product.active,
            created_at: product.created_at,
            updated_at: product.updated_at,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// Full-text search over names (ranked first) and descriptions; words match as prefixes
    /// (at most 200 characters; the first 8 words count).
    #[param(max_length = 200)]
    q: Option<String>,
    /// A category slug.
    #[param(
        pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[A-Za-z0-9]([A-Za-z0-9-]{0,48}[A-Za-z0-9])?[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    category: Option<String>,
    /// 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page: opaque, only what this API returned (400 otherwise).
    cursor: Option<String>,
}

/// List or search the catalog (active products only).
#[utoipa::path(get, path = "/v1/products", tag = "products", params(ListParams), responses(
    (status = 200, body = Page<ProductResponse>),
    (status = 400, description = "invalid_cursor", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "bad limit, q or category", body = Problem, content_type = "application/problem+json"),
))]
pub(super) async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page<ProductResponse>>, Error> {
    let Query(params) = params.map_err(|rejection| Problem::bad_request("bad_query", rejection.body_text()))?;
    let mut errors = Vec::new();
    let limit = match params.limit.as_deref().map(str::parse::<i64>) {
        None => page_limit(None).ok(),
        Some(Ok(limit)) => {
            page_limit(Some(limit)).map_err(|_| errors.push(FieldError::new("limit", "must be between 1 and 100"))).ok()
        }
        Some(Err(_)) => {
            errors.push(FieldError::new("limit", "must be a whole number between 1 and 100"));
            None
        }
    };
    let terms = match params.q.as_deref().map(SearchTerms::parse).transpose() {
        Ok(terms) => terms.flatten(),
        Err(message) => {
            errors.push(FieldError::new("q", message));
            None
        }
    };
    let category = params
        .category
        .as_deref()
        .map(Slug::parse)
        .transpose()
        .map_err(|message| errors.push(FieldError::new("category", message)))
        .ok()
        .flatten();
    let Some(limit) = limit.filter(|_| errors.is_empty()) else {
        return Err(Error::Validation(errors));
    };
    let after: Option<Position> = params.cursor.as_deref().map(decode_cursor).transpose()?.flatten();
    let mut connection = state.pool().acquire().await?;
    let listing = Listing { terms: terms.as_ref(), category: category.as_ref(), limit, after };
    let (products, next) = store::products::list(&mut connection, &listing).await?;
    Ok(Json(Page {
        items: products.into_iter().map(ProductResponse::from).collect(),
        next_cursor: next.as_ref().map(encode_cursor),
    }))
}

/// How long a client or a shared cache may reuse a product read without asking again. Stock
/// changes often, and checkout re-checks it anyway, so a few seconds.
const PRODUCT_MAX_AGE: &str = "public, max-age=5";

/// One product (inactive ones too, with `active: false`; deleted ones are 404). The answer
/// carries an `ETag` (a hash of its body) and `Cache-Control: public, max-age=5`; a request
/// whose `If-None-Match` names the current ETag gets 304 with no body.
#[utoipa::path(get, path = "/v1/products/{id}", tag = "products", params(("id" = Uuid, Path)), responses(
    (status = 200, body = ProductResponse, headers(("ETag" = String), ("Cache-Control" = String))),
    (status = 304, description = "unchanged since the ETag in If-None-Match"),
    (status = 404, description = "product_not_found", body = Problem, content_type = "application/problem+json"),
))]
pub(super) async fn read(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, Error> {
    let id = parse_id(&id, "product_not_found")?;
    let body = serde_json::to_vec(&ProductResponse::from(state.product(id).await?))
        .map_err(|error| Error::Internal(error.into()))?;
    Ok(super::cacheable_json(&headers, body, PRODUCT_MAX_AGE))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateRequest {
    /// 1 to 64 of `A-Z a-z 0-9 - _ .`; stored trimmed and upper-case.
    #[schema(
        pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[A-Za-z0-9._-]{1,64}[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    sku: String,
    /// At most 200 characters, not only spaces, no control characters; stored trimmed.
    #[schema(
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    name: String,
    /// At most 5000 characters; newlines and tabs are the only control characters allowed.
    #[serde(default)]
    #[schema(max_length = 5000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    description: String,
    price: MoneyInput,
    /// At most 10 category slugs.
    #[serde(default)]
    #[schema(max_items = 10)]
    categories: Vec<SlugText>,
    /// An `http(s)://` address, at most 2048 characters, no spaces inside.
    #[schema(
        max_length = 2048,
        pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*https?://[^ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f]+[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    image_url: Option<String>,
    /// Units on hand to start with, 0 to 1,000,000 (default 0).
    #[serde(default, deserialize_with = "shop_kit::api::whole_number")]
    #[schema(minimum = 0, maximum = 1_000_000)]
    stock: i64,
}

/// A category slug as sent: 1 to 50 of `a-z 0-9 -`, neither first nor last a `-`; stored
/// trimmed and lower-case.
#[derive(Deserialize, ToSchema)]
#[schema(
    pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[A-Za-z0-9]([A-Za-z0-9-]{0,48}[A-Za-z0-9])?[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
)]
pub(super) struct SlugText(String);

fn parse_categories(input: &[SlugText], errors: &mut Vec<FieldError>) -> Vec<Slug> {
    if input.len() > 10 {
        errors.push(FieldError::new("categories", "at most 10 categories"));
        return Vec::new();
    }
    let mut slugs = Vec::new();
    for (index, SlugText(text)) in input.iter().enumerate() {
        match Slug::parse(text) {
            Ok(slug) => slugs.push(slug),
            Err(message) => errors.push(FieldError::new(format!("categories[{index}]"), message)),
        }
    }
    slugs.sort();
    slugs.dedup();
    slugs
}

fn field<T>(result: Result<T, String>, name: &str, errors: &mut Vec<FieldError>) -> Option<T> {
    result.map_err(|message| errors.push(FieldError::new(name, message))).ok()
}

/// Add a product (admin).
#[utoipa::path(post, path = "/v1/products", tag = "products", security(("bearer" = [])), request_body = CreateRequest, responses(
    (status = 201, body = ProductResponse),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "sku_taken", body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub(super) async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<CreateRequest>,
) -> Result<impl IntoResponse, Error> {
    let mut errors = Vec::new();
    let sku = field(Sku::parse(&body.sku), "sku", &mut errors);
    let name = field(ProductName::parse(&body.name), "name", &mut errors);
    let description = field(Description::parse(&body.description), "description", &mut errors);
    let image_url = body.image_url.as_deref().and_then(|url| field(ImageUrl::parse(url), "image_url", &mut errors));
    let stock = field(StockLevel::parse(body.stock), "stock", &mut errors);
    let price = Money::from(body.price);
    if let Err(error) = price.validate("price") {
        errors.push(error);
    }
    let categories = parse_categories(&body.categories, &mut errors);
    let (Some(sku), Some(name), Some(description), Some(stock), true) =
        (sku, name, description, stock, errors.is_empty())
    else {
        return Err(Error::Validation(errors));
    };
    let mut transaction = state.pool().begin().await?;
    let new = NewProduct {
        sku: sku.as_str(),
        name: name.as_str(),
        description: description.as_str(),
        price_amount: price.amount,
        currency: &price.currency,
        image_url: image_url.as_ref().map(ImageUrl::as_str),
        categories: &categories,
        on_hand: stock.get(),
    };
    let id = store::products::insert(&mut transaction, &new).await?;
    let product = store::products::by_id(&mut transaction, id).await?.ok_or(Error::ProductNotFound)?;
    product_changed(&state, &mut transaction, &product, false).await?;
    transaction.commit().await?;
    state.cache().invalidate(&[id]).await;
    tracing::info!(product.id = %id, product.sku = %product.sku, "product created");
    Ok((StatusCode::CREATED, [(header::LOCATION, format!("/v1/products/{id}"))], Json(ProductResponse::from(product))))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateRequest {
    /// As in a create.
    #[schema(
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    name: Option<String>,
    #[schema(max_length = 5000, pattern = r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$")]
    description: Option<String>,
    price: Option<MoneyInput>,
    #[schema(max_items = 10)]
    categories: Option<Vec<SlugText>>,
    #[schema(
        max_length = 2048,
        pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*https?://[^ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f]+[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    image_url: Option<String>,
    active: Option<bool>,
}

/// Change a product (admin); absent (or null) fields stay as they are, and `{}` answers the
/// product as it is. With `If-Match` (the `ETag` of a
/// read), the change applies only if the product is still as read, else 412: two admins
/// editing at once cannot overwrite each other unseen. The ETag covers the whole product,
/// stock included, so a sale in between also asks for a fresh read. The answer carries the new
/// ETag.
#[utoipa::path(patch, path = "/v1/products/{id}", tag = "products", security(("bearer" = [])), request_body = UpdateRequest,
    params(("id" = Uuid, Path), ("If-Match" = Option<String>, Header, description = "the ETag the change is based on")),
    responses(
    (status = 200, body = ProductResponse, headers(("ETag" = String))),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 412, description = "precondition_failed: the product changed since the ETag in If-Match", body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub(super) async fn update(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<UpdateRequest>,
) -> Result<axum::response::Response, Error> {
    let id = parse_id(&id, "product_not_found")?;
    let mut errors = Vec::new();
    let name = body.name.as_deref().and_then(|name| field(ProductName::parse(name), "name", &mut errors));
    let description =
        body.description.as_deref().and_then(|text| field(Description::parse(text), "description", &mut errors));
    let image_url = body.image_url.as_deref().and_then(|url| field(ImageUrl::parse(url), "image_url", &mut errors));
    let price = body.price.map(Money::from);
    if let Some(Err(error)) = price.as_ref().map(|price| price.validate("price")) {
        errors.push(error);
    }
    let categories = body.categories.as_deref().map(|list| parse_categories(list, &mut errors));
    // `{}` (or only nulls) changes nothing: the product as it is, If-Match checked all the same.
    let nothing = body.name.is_none()
        && body.description.is_none()
        && price.is_none()
        && categories.is_none()
        && body.image_url.is_none()
        && body.active.is_none();
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    let changes = ProductChanges {
        name: name.as_ref().map(ProductName::as_str),
        description: description.as_ref().map(Description::as_str),
        price_amount: price.as_ref().map(|price| price.amount),
        currency: price.as_ref().map(|price| price.currency.as_str()),
        image_url: image_url.as_ref().map(ImageUrl::as_str),
        active: body.active,
        categories: categories.as_deref(),
    };
    let mut transaction = state.pool().begin().await?;
    if headers.contains_key(header::IF_MATCH) {
        // Locked until the commit, so nothing changes between the comparison and the update.
        let current = store::products::by_id_for_update(&mut transaction, id).await?.ok_or(Error::ProductNotFound)?;
        let current =
            serde_json::to_vec(&ProductResponse::from(current)).map_err(|error| Error::Internal(error.into()))?;
        if !super::list_names(&headers, header::IF_MATCH, &super::etag_of(&current)) {
            return Err(Error::from(shop_kit::error::Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "the product changed since the ETag in If-Match; read it again",
            )));
        }
    }
    if !nothing {
        store::products::update(&mut transaction, id, &changes).await?;
    }
    let product = store::products::by_id(&mut transaction, id).await?.ok_or(Error::ProductNotFound)?;
    if !nothing {
        product_changed(&state, &mut transaction, &product, false).await?;
    }
    transaction.commit().await?;
    if !nothing {
        state.cache().invalidate(&[id]).await;
    }
    let body = serde_json::to_vec(&ProductResponse::from(product)).map_err(|error| Error::Internal(error.into()))?;
    Ok(([(header::ETAG, super::etag_of(&body))], [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Remove a product from sale (admin). It stays readable by id for nobody; orders keep their copy.
#[utoipa::path(delete, path = "/v1/products/{id}", tag = "products", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let id = parse_id(&id, "product_not_found")?;
    let mut transaction = state.pool().begin().await?;
    let product = store::products::by_id(&mut transaction, id).await?.ok_or(Error::ProductNotFound)?;
    store::products::soft_delete(&mut transaction, id).await?;
    product_changed(&state, &mut transaction, &product, true).await?;
    transaction.commit().await?;
    state.cache().invalidate(&[id]).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StockRequest {
    /// Units on hand, 0 to 1,000,000; not below what is reserved.
    #[schema(minimum = 0, maximum = 1_000_000)]
    #[serde(deserialize_with = "shop_kit::api::whole_number")]
    on_hand: i64,
}

/// Set the units on hand (admin).
#[utoipa::path(put, path = "/v1/products/{id}/stock", tag = "products", security(("bearer" = [])), request_body = StockRequest,
    params(("id" = Uuid, Path)), responses(
    (status = 200, body = ProductResponse),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "stock_below_reserved", body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub(super) async fn set_stock(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StockRequest>,
) -> Result<Json<ProductResponse>, Error> {
    let id = parse_id(&id, "product_not_found")?;
    let on_hand = StockLevel::parse(body.on_hand).map_err(|message| Error::invalid("on_hand", message))?;
    let mut transaction = state.pool().begin().await?;
    crate::store::inventory::set_on_hand(&mut transaction, id, on_hand.get()).await?;
    let product = store::products::by_id(&mut transaction, id).await?.ok_or(Error::ProductNotFound)?;
    let message = shop_proto::shop::events::v1::StockChanged {
        product_id: id.to_string(),
        on_hand: on_hand.get().into(),
        available: product.stock_available,
    };
    let event = state.topics().event(id.to_string(), &message);
    shop_kit::events::enqueue(&mut transaction, &event).await?;
    transaction.commit().await?;
    state.cache().invalidate(&[id]).await;
    Ok(Json(product.into()))
}
