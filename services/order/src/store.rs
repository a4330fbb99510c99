//! SQL for orders, their lines and idempotency keys. Functions take a connection, so the
//! caller decides the transaction (the outbox write shares it).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{Order, OrderLine, OrderStatus, Shipment, ShippingAddress},
    error::Error,
};

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    user_id: Uuid,
    status: String,
    total_amount: i64,
    currency: String,
    shipping_address: sqlx::types::Json<ShippingAddress>,
    failure_reason: Option<String>,
    lines: sqlx::types::Json<Vec<OrderLine>>,
    carrier: Option<String>,
    tracking_number: Option<String>,
    shipped_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<Row> for Order {
    type Error = Error;

    fn try_from(row: Row) -> Result<Self, Error> {
        let status = OrderStatus::parse(&row.status)
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("unknown order status {:?}", row.status)))?;
        Ok(Self {
            id: row.id,
            user_id: row.user_id,
            status,
            total_amount: row.total_amount,
            currency: row.currency,
            shipping_address: row.shipping_address.0,
            failure_reason: row.failure_reason,
            lines: row.lines.0,
            shipment: match (row.carrier, row.tracking_number, row.shipped_at) {
                (Some(carrier), Some(tracking_number), Some(shipped_at)) => {
                    Some(Shipment { carrier, tracking_number, shipped_at })
                }
                _ => None,
            },
            delivered_at: row.delivered_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

const SELECT: &str = "SELECT o.id, o.user_id, o.status, o.total_amount, o.currency, o.shipping_address, o.failure_reason, \
    COALESCE((SELECT jsonb_agg(jsonb_build_object('product_id', i.product_id, 'name', i.name, 'quantity', i.quantity, \
        'unit_price_amount', i.unit_price_amount, 'currency', i.currency) ORDER BY i.product_id) \
        FROM order_items i WHERE i.order_id = o.id), '[]'::jsonb) AS lines, o.carrier, o.tracking_number, o.shipped_at, \
    o.delivered_at, o.created_at, o.updated_at FROM orders o";

/// The answer a request with an `Idempotency-Key` stores for its replays.
pub struct StoredAnswer<'a> {
    pub key: &'a str,
    pub status: u16,
    pub body: &'a serde_json::Value,
}

/// The statement [`place`] runs: the order, its lines, the idempotent answer and the
/// outbox row, then the relay's wake-up. One statement is one transaction in Postgres, so
/// the whole checkout write is one round trip (`cargo xtask bench` runs the same SQL
/// through pgbench as the limit).
pub static PLACE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH o AS (INSERT INTO orders (id, user_id, status, total_amount, currency, shipping_address, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id), \
         i AS (INSERT INTO order_items (order_id, product_id, name, quantity, unit_price_amount, currency) \
         SELECT o.id, l.product_id, l.name, l.quantity, l.price, $5 FROM o, \
         unnest($8::uuid[], $9::text[], $10::int[], $11::bigint[]) AS l(product_id, name, quantity, price)), \
         k AS (UPDATE idempotency_keys SET response_status = $12, response_body = $13 WHERE user_id = $2 AND key = $14), \
         e AS ({}) {}",
        shop_kit::events::outbox_insert(15),
        shop_kit::events::WAKE_RELAY,
    )
});

/// Stores a new order with its lines, the answer for replays of its idempotency key (if
/// any) and its `OrderPlaced` event, atomically, in one statement.
pub async fn place(
    connection: &mut PgConnection,
    order: &Order,
    answer: Option<StoredAnswer<'_>>,
    placed: &shop_kit::events::Event,
) -> Result<(), Error> {
    let products: Vec<Uuid> = order.lines.iter().map(|line| line.product_id).collect();
    let names: Vec<&str> = order.lines.iter().map(|line| line.name.as_str()).collect();
    let quantities: Vec<i32> = order.lines.iter().map(|line| line.quantity).collect();
    let prices: Vec<i64> = order.lines.iter().map(|line| line.unit_price_amount).collect();
    let traced = shop_kit::events::Traced::current(placed);
    let query = sqlx::query(PLACE_SQL.as_str())
        .bind(order.id)
        .bind(order.user_id)
        .bind(order.status.as_str())
        .bind(order.total_amount)
        .bind(&order.currency)
        .bind(sqlx::types::Json(&order.shipping_address))
        .bind(order.created_at)
        .bind(&products)
        .bind(&names)
        .bind(&quantities)
        .bind(&prices)
        .bind(answer.as_ref().map(|answer| i32::from(answer.status)))
        .bind(answer.as_ref().map(|answer| answer.body))
        .bind(answer.as_ref().map(|answer| answer.key));
    traced.bind(query).execute(connection).await?;
    Ok(())
}

/// How many orders `user_id` placed with an id at or after `since`, and the oldest of them.
/// Order ids are UUIDv7 (time first), so this is a range scan of `orders_user_idx`.
pub async fn placed_since(
    connection: &mut PgConnection,
    user_id: Uuid,
    since: Uuid,
) -> Result<(i64, Option<Uuid>), Error> {
    let row: (i64, Option<Uuid>) =
        // (Postgres 15 has no min(uuid).)
        sqlx::query_as("SELECT count(*), (array_agg(id ORDER BY id))[1] FROM orders WHERE user_id = $1 AND id >= $2")
            .bind(user_id)
            .bind(since)
            .fetch_one(connection)
            .await?;
    Ok(row)
}

pub async fn by_id(connection: &mut PgConnection, id: Uuid) -> Result<Option<Order>, Error> {
    let row: Option<Row> =
        sqlx::query_as(&format!("{SELECT} WHERE o.id = $1")).bind(id).fetch_optional(connection).await?;
    row.map(Order::try_from).transpose()
}

/// Newest first; `owner` limits to one user's orders; `before` is the last id of the previous page.
pub async fn list(
    connection: &mut PgConnection,
    owner: Option<Uuid>,
    before: Option<Uuid>,
    limit: u32,
) -> Result<(Vec<Order>, Option<Uuid>), Error> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "{SELECT} WHERE ($1::uuid IS NULL OR o.user_id = $1) AND ($2::uuid IS NULL OR o.id < $2) ORDER BY o.id DESC LIMIT $3"
    ))
    .bind(owner)
    .bind(before)
    .bind(i64::from(limit) + 1)
    .fetch_all(connection)
    .await?;
    let (rows, next) = shop_kit::api::take_page(rows, limit, |row| row.id);
    Ok((rows.into_iter().map(Order::try_from).collect::<Result<_, _>>()?, next))
}

/// Moves an order to `to` if the state machine allows it from where it is; returns the
/// order as it was before. Locks the row for the rest of the transaction.
pub async fn transition(
    connection: &mut PgConnection,
    id: Uuid,
    to: OrderStatus,
    reason: Option<&str>,
) -> Result<Order, Error> {
    let before = {
        let row: Option<Row> = sqlx::query_as(&format!("{SELECT} WHERE o.id = $1 FOR UPDATE OF o"))
            .bind(id)
            .fetch_optional(&mut *connection)
            .await?;
        Order::try_from(row.ok_or(Error::OrderNotFound)?)?
    };
    if !to.allowed_from().contains(&before.status) {
        return Err(Error::IllegalTransition { from: before.status.as_str().to_owned(), to: to.as_str() });
    }
    sqlx::query("UPDATE orders SET status = $2, failure_reason = COALESCE($3, failure_reason), updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(to.as_str())
        .bind(reason)
        .execute(connection)
        .await?;
    Ok(before)
}

/// Records how a (just shipped) order travels.
pub async fn record_shipment(
    connection: &mut PgConnection,
    id: Uuid,
    carrier: &str,
    tracking_number: &str,
) -> Result<(), Error> {
    sqlx::query("UPDATE orders SET carrier = $2, tracking_number = $3, shipped_at = now() WHERE id = $1")
        .bind(id)
        .bind(carrier)
        .bind(tracking_number)
        .execute(connection)
        .await?;
    Ok(())
}

/// Records when a (just delivered) order arrived.
pub async fn record_delivery(connection: &mut PgConnection, id: Uuid) -> Result<(), Error> {
    sqlx::query("UPDATE orders SET delivered_at = now() WHERE id = $1").bind(id).execute(connection).await?;
    Ok(())
}

/// What a claimed idempotency key holds.
pub enum Claim {
    /// First use: go ahead; [`place`] stores the answer with the order (or [`abandon`] it on failure).
    New,
    /// Used before with the same request: here is its answer.
    Replay { status: u16, body: serde_json::Value },
    /// Used before with another request.
    Mismatch,
    /// The first request is still running.
    InProgress,
}

/// Claims `key` for a request with body hash `hash`. A claim with no answer yet that is
/// older than `lease` is taken over by the same request (same body): the request that
/// claimed it died before it stored an order (the lease exceeds the request timeout, so it
/// is not still running).
pub async fn claim(
    connection: &mut PgConnection,
    user_id: Uuid,
    key: &str,
    hash: &[u8],
    lease: std::time::Duration,
) -> Result<Claim, Error> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, request_hash) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id, key) DO UPDATE SET claimed_at = now() \
         WHERE idempotency_keys.response_status IS NULL AND idempotency_keys.request_hash = EXCLUDED.request_hash \
         AND idempotency_keys.claimed_at < now() - $4 * interval '1 second'",
    )
    .bind(user_id)
    .bind(key)
    .bind(hash)
    .bind(lease.as_secs_f64())
    .execute(&mut *connection)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let (stored_hash, status, body): (Vec<u8>, Option<i32>, Option<serde_json::Value>) = sqlx::query_as(
        "SELECT request_hash, response_status, response_body FROM idempotency_keys WHERE user_id = $1 AND key = $2",
    )
    .bind(user_id)
    .bind(key)
    .fetch_one(connection)
    .await?;
    Ok(match (stored_hash == hash, status, body) {
        (false, _, _) => Claim::Mismatch,
        (true, Some(status), Some(body)) => Claim::Replay { status: u16::try_from(status).unwrap_or(500), body },
        (true, _, _) => Claim::InProgress,
    })
}

/// Frees a key whose request failed before it stored anything, so a retry can run.
pub async fn abandon(connection: &mut PgConnection, user_id: Uuid, key: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND response_status IS NULL")
        .bind(user_id)
        .bind(key)
        .execute(connection)
        .await?;
    Ok(())
}

/// The retention rule of idempotency keys: those claimed more than `age` ago, answered or not.
pub fn idempotency_retention_rule(age: std::time::Duration) -> shop_kit::retention::Rule {
    shop_kit::retention::Rule::new(
        "idempotency_keys",
        "DELETE FROM idempotency_keys WHERE (user_id, key) IN (SELECT user_id, key FROM idempotency_keys \
         WHERE created_at < now() - $1 * interval '1 second' ORDER BY created_at LIMIT $2)",
        age,
    )
}
