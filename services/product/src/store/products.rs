//! The catalog tables: products, categories and their links.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{SearchTerms, Slug},
    error::Error,
};

/// A product as the service (and its cache) holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price_amount: i64,
    pub currency: String,
    pub categories: Vec<String>,
    pub stock_available: i64,
    pub image_url: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    sku: String,
    name: String,
    description: String,
    price_amount: i64,
    currency: String,
    categories: Vec<String>,
    stock_available: i64,
    image_url: Option<String>,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Row> for Product {
    fn from(row: Row) -> Self {
        Self {
            id: row.id,
            sku: row.sku,
            name: row.name,
            description: row.description,
            price_amount: row.price_amount,
            currency: row.currency,
            categories: row.categories,
            stock_available: row.stock_available,
            image_url: row.image_url,
            active: row.active,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The columns of [`Row`], from `products p` left-joined to `inventory i`.
const COLUMNS: &str = "p.id, p.sku, p.name, p.description, p.price_amount, p.currency, \
    ARRAY(SELECT c.slug FROM product_categories pc JOIN categories c ON c.id = pc.category_id \
          WHERE pc.product_id = p.id ORDER BY c.slug) AS categories, \
    COALESCE(i.on_hand - i.reserved, 0)::bigint AS stock_available, p.image_url, p.active, p.created_at, p.updated_at";
const FROM: &str = "FROM products p LEFT JOIN inventory i ON i.product_id = p.id";

pub struct NewProduct<'a> {
    pub sku: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub price_amount: i64,
    pub currency: &'a str,
    pub image_url: Option<&'a str>,
    pub categories: &'a [Slug],
    pub on_hand: i32,
}

/// Creates a product with its inventory row; `Error::SkuTaken` on a duplicate sku.
pub async fn insert(connection: &mut PgConnection, product: &NewProduct<'_>) -> Result<Uuid, Error> {
    let id = Uuid::now_v7();
    sqlx::query(
        "WITH p AS (INSERT INTO products (id, sku, name, description, price_amount, currency, image_url) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id) \
         INSERT INTO inventory (product_id, on_hand) SELECT id, $8 FROM p",
    )
    .bind(id)
    .bind(product.sku)
    .bind(product.name)
    .bind(product.description)
    .bind(product.price_amount)
    .bind(product.currency)
    .bind(product.image_url)
    .bind(product.on_hand)
    .execute(&mut *connection)
    .await
    .map_err(|error| if shop_kit::db::violates(&error, "products_sku_key") { Error::SkuTaken } else { error.into() })?;
    set_categories(connection, id, product.categories).await?;
    Ok(id)
}

/// Replaces a product's categories, creating any category that does not exist yet.
pub async fn set_categories(connection: &mut PgConnection, product_id: Uuid, slugs: &[Slug]) -> Result<(), Error> {
    let slugs: Vec<&str> = slugs.iter().map(Slug::as_str).collect();
    let names: Vec<String> =
        slugs.iter().map(|slug| Slug::parse(slug).map(|s| s.display_name()).unwrap_or_default()).collect();
    let ids: Vec<Uuid> = slugs.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO categories (id, slug, name) SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[]) \
         ON CONFLICT (slug) DO NOTHING",
    )
    .bind(&ids)
    .bind(&slugs)
    .bind(&names)
    .execute(&mut *connection)
    .await?;
    sqlx::query("DELETE FROM product_categories WHERE product_id = $1")
        .bind(product_id)
        .execute(&mut *connection)
        .await?;
    sqlx::query(
        "INSERT INTO product_categories (product_id, category_id) SELECT $1, id FROM categories WHERE slug = ANY($2)",
    )
    .bind(product_id)
    .bind(&slugs)
    .execute(connection)
    .await?;
    Ok(())
}

/// One product, deleted ones excluded. The statement (`COLUMNS` and `FROM` by id) is a file of
/// its own: `cargo xtask bench` runs the same file with pgbench as the cache miss's limit.
pub async fn by_id(connection: &mut PgConnection, id: Uuid) -> Result<Option<Product>, Error> {
    let row: Option<Row> =
        sqlx::query_as(include_str!("sql/product_by_id.sql")).bind(id).fetch_optional(connection).await?;
    Ok(row.map(Product::from))
}

/// One product, deleted ones excluded, locked against other writers until the transaction ends.
pub async fn by_id_for_update(connection: &mut PgConnection, id: Uuid) -> Result<Option<Product>, Error> {
    let locked: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM products WHERE id = $1 AND deleted_at IS NULL FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *connection)
            .await?;
    match locked {
        Some(_) => by_id(connection, id).await,
        None => Ok(None),
    }
}

/// Many products, in no particular order; unknown and deleted ids are left out.
pub async fn by_ids(connection: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<Product>, Error> {
    let rows: Vec<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} {FROM} WHERE p.id = ANY($1) AND p.deleted_at IS NULL"))
            .bind(ids)
            .fetch_all(connection)
            .await?;
    Ok(rows.into_iter().map(Product::from).collect())
}

/// What a list asks for.
pub struct Listing<'a> {
    pub terms: Option<&'a SearchTerms>,
    pub category: Option<&'a Slug>,
    pub limit: u32,
    pub after: Option<Position>,
}

/// Where a page ends: the rank (searches only) and id of its last product. Ordering is by
/// rank then id (ids are UUIDv7, so newer rows sort after older ones and an insert never
/// shifts a page that was already served).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub rank: Option<f32>,
    pub id: Uuid,
}

/// One page of listed (active, not deleted) products, and where the next page starts.
pub async fn list(
    connection: &mut PgConnection,
    listing: &Listing<'_>,
) -> Result<(Vec<Product>, Option<Position>), Error> {
    let tsquery = listing.terms.map(SearchTerms::to_tsquery);
    // Without a query every rank is 0, so one keyset condition serves browsing and search.
    let sql = format!(
        "SELECT * FROM (SELECT {COLUMNS}, COALESCE(ts_rank(p.search, to_tsquery('english', $1::text)), 0)::real AS rank \
           {FROM} WHERE p.active AND p.deleted_at IS NULL \
           AND ($1::text IS NULL OR p.search @@ to_tsquery('english', $1::text)) \
           AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM product_categories pc JOIN categories c \
                ON c.id = pc.category_id WHERE pc.product_id = p.id AND c.slug = $2::text))) ranked \
         WHERE $3::uuid IS NULL OR rank < $4::real OR (rank = $4::real AND id > $3::uuid) \
         ORDER BY rank DESC, id ASC LIMIT $5"
    );
    let rows: Vec<RankedRow> = sqlx::query_as(&sql)
        .bind(&tsquery)
        .bind(listing.category.map(Slug::as_str))
        .bind(listing.after.as_ref().map(|after| after.id))
        .bind(listing.after.as_ref().and_then(|after| after.rank).unwrap_or(0.0))
        .bind(i64::from(listing.limit) + 1)
        .fetch_all(connection)
        .await?;
    let has_more = rows.len() > listing.limit as usize;
    let rows: Vec<RankedRow> = rows.into_iter().take(listing.limit as usize).collect();
    let next = has_more
        .then(|| rows.last().map(|last| Position { rank: tsquery.as_ref().map(|_| last.rank), id: last.row.id }))
        .flatten();
    Ok((rows.into_iter().map(|ranked| ranked.row.into()).collect(), next))
}

#[derive(sqlx::FromRow)]
struct RankedRow {
    #[sqlx(flatten)]
    row: Row,
    rank: f32,
}

/// What PATCH may change; `None` leaves a field as it is.
#[derive(Default)]
pub struct ProductChanges<'a> {
    pub name: Option<&'a str>,
    pub description: Option<&'a str>,
    pub price_amount: Option<i64>,
    pub currency: Option<&'a str>,
    pub image_url: Option<&'a str>,
    pub active: Option<bool>,
    pub categories: Option<&'a [Slug]>,
}

pub async fn update(connection: &mut PgConnection, id: Uuid, changes: &ProductChanges<'_>) -> Result<(), Error> {
    let updated = sqlx::query(
        "UPDATE products SET name = COALESCE($2, name), description = COALESCE($3, description), \
         price_amount = COALESCE($4, price_amount), currency = COALESCE($5, currency), \
         image_url = COALESCE($6, image_url), active = COALESCE($7, active), updated_at = now() \
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(changes.name)
    .bind(changes.description)
    .bind(changes.price_amount)
    .bind(changes.currency)
    .bind(changes.image_url)
    .bind(changes.active)
    .execute(&mut *connection)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(Error::ProductNotFound);
    }
    if let Some(categories) = changes.categories {
        set_categories(connection, id, categories).await?;
    }
    Ok(())
}

/// Soft delete: the row stays for the orders that name it; it is no longer listed or sold.
pub async fn soft_delete(connection: &mut PgConnection, id: Uuid) -> Result<(), Error> {
    let deleted = sqlx::query(
        "UPDATE products SET deleted_at = now(), active = false, updated_at = now() WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .execute(connection)
    .await?;
    if deleted.rows_affected() == 0 { Err(Error::ProductNotFound) } else { Ok(()) }
}

/// A category with the number of listed products in it.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Category {
    pub slug: String,
    pub name: String,
    pub product_count: i64,
}

pub async fn categories(connection: &mut PgConnection) -> Result<Vec<Category>, Error> {
    Ok(sqlx::query_as(
        "SELECT c.slug, c.name, count(p.id) AS product_count FROM categories c \
         LEFT JOIN product_categories pc ON pc.category_id = c.id \
         LEFT JOIN products p ON p.id = pc.product_id AND p.active AND p.deleted_at IS NULL \
         GROUP BY c.id ORDER BY c.slug",
    )
    .fetch_all(connection)
    .await?)
}
