//! Inventory and reservations.
//!
//! Invariants: `0 <= reserved <= on_hand` for every product (checked by the database as
//! the last line of defence); a reservation is all or nothing; one `order_id` is answered
//! once and the same way on every retry. Rows are locked in product-id order, in reserve
//! and release alike, so concurrent orders never deadlock.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{Acquire as _, PgConnection};
use uuid::Uuid;

use crate::error::Error;

/// What a reservation request got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reservation {
    /// The stock is held until `expires_at`.
    Held { expires_at: DateTime<Utc> },
    /// Some line was short (or not for sale); nothing is held.
    Rejected { detail: String },
}

/// The product ids an order's reservation touched, for cache invalidation.
pub type Touched = Vec<Uuid>;

/// Holds `lines` (product → quantity) for `order_id`, all or nothing. A repeated order id
/// gets the first answer back and changes nothing.
pub async fn reserve(
    connection: &mut PgConnection,
    order_id: Uuid,
    owner_id: Uuid,
    lines: &BTreeMap<Uuid, i32>,
    expires_at: DateTime<Utc>,
) -> Result<(Reservation, Touched), Error> {
    let mut transaction = connection.begin().await?;
    // Concurrent requests for one order id queue on this insert; the loser reads the answer.
    let claimed = sqlx::query(
        "INSERT INTO reservation_requests (order_id, owner_id, outcome, expires_at) VALUES ($1, $2, 'reserved', $3) \
         ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(order_id)
    .bind(owner_id)
    .bind(expires_at)
    .execute(&mut *transaction)
    .await?
    .rows_affected()
        == 1;
    if !claimed {
        let (outcome, detail, expires_at): (String, String, DateTime<Utc>) =
            sqlx::query_as("SELECT outcome, detail, expires_at FROM reservation_requests WHERE order_id = $1")
                .bind(order_id)
                .fetch_one(&mut *transaction)
                .await?;
        transaction.commit().await?;
        let answer =
            if outcome == "reserved" { Reservation::Held { expires_at } } else { Reservation::Rejected { detail } };
        return Ok((answer, Vec::new()));
    }

    let mut short = Vec::new();
    for (product_id, quantity) in lines {
        let held = sqlx::query(
            "UPDATE inventory i SET reserved = i.reserved + $2 FROM products p \
             WHERE i.product_id = $1 AND p.id = i.product_id AND p.active AND p.deleted_at IS NULL \
               AND i.on_hand - i.reserved >= $2",
        )
        .bind(product_id)
        .bind(quantity)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if held == 0 {
            short.push(product_id.to_string());
        }
    }
    if !short.is_empty() {
        let detail = format!("not enough stock for product(s): {}", short.join(", "));
        transaction.rollback().await?;
        // Record the refusal on its own, so that a retry gets the same answer.
        sqlx::query(
            "INSERT INTO reservation_requests (order_id, owner_id, outcome, detail, expires_at) \
             VALUES ($1, $2, 'rejected', $3, $4) ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order_id)
        .bind(owner_id)
        .bind(&detail)
        .bind(expires_at)
        .execute(&mut *connection)
        .await?;
        return Ok((Reservation::Rejected { detail }, Vec::new()));
    }
    let products: Vec<Uuid> = lines.keys().copied().collect();
    let quantities: Vec<i32> = lines.values().copied().collect();
    sqlx::query(
        "INSERT INTO reservations (order_id, product_id, quantity, expires_at) \
         SELECT $1, product_id, quantity, $4 FROM unnest($2::uuid[], $3::int[]) AS l(product_id, quantity)",
    )
    .bind(order_id)
    .bind(&products)
    .bind(&quantities)
    .bind(expires_at)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok((Reservation::Held { expires_at }, products))
}

/// Why held units go back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseReason {
    /// The order asked (cancelled or failed).
    Released,
    /// Nobody confirmed the order in time.
    Expired,
}

impl ReleaseReason {
    fn status(self) -> &'static str {
        match self {
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }
}

/// Gives back what `order_id` holds; returns the units released and the products touched.
/// Releasing an order with nothing held is not an error.
pub async fn release(
    connection: &mut PgConnection,
    order_id: Uuid,
    reason: ReleaseReason,
) -> Result<(i64, Touched), Error> {
    let mut transaction = connection.begin().await?;
    let held: Vec<(Uuid, i32)> = sqlx::query_as(
        "SELECT product_id, quantity FROM reservations WHERE order_id = $1 AND status = 'held' \
         ORDER BY product_id FOR UPDATE",
    )
    .bind(order_id)
    .fetch_all(&mut *transaction)
    .await?;
    let mut units = 0_i64;
    for (product_id, quantity) in &held {
        sqlx::query("UPDATE inventory SET reserved = reserved - $2 WHERE product_id = $1")
            .bind(product_id)
            .bind(quantity)
            .execute(&mut *transaction)
            .await?;
        units += i64::from(*quantity);
    }
    sqlx::query("UPDATE reservations SET status = $2, settled_at = now() WHERE order_id = $1 AND status = 'held'")
        .bind(order_id)
        .bind(reason.status())
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok((units, held.into_iter().map(|(product_id, _)| product_id).collect()))
}

/// Orders whose holds have lapsed (at most `limit`).
pub async fn lapsed(connection: &mut PgConnection, limit: i64) -> Result<Vec<Uuid>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT order_id FROM reservations WHERE status = 'held' AND expires_at <= now() LIMIT $1",
    )
    .bind(limit)
    .fetch_all(connection)
    .await?)
}

/// Sets the units on hand; refused below what is reserved.
pub async fn set_on_hand(connection: &mut PgConnection, product_id: Uuid, on_hand: i32) -> Result<(), Error> {
    let row: Option<(i32, bool)> = sqlx::query_as(
        "UPDATE inventory i SET on_hand = CASE WHEN $2 >= i.reserved THEN $2 ELSE i.on_hand END \
         FROM products p WHERE i.product_id = $1 AND p.id = i.product_id AND p.deleted_at IS NULL \
         RETURNING i.reserved, $2 >= i.reserved",
    )
    .bind(product_id)
    .bind(on_hand)
    .fetch_optional(connection)
    .await?;
    match row {
        None => Err(Error::ProductNotFound),
        Some((reserved, false)) => Err(Error::StockBelowReserved { reserved }),
        Some((_, true)) => Ok(()),
    }
}

/// Sells what `order_id` holds: on hand and reserved both go down. When the hold is gone
/// (it lapsed before the payment came), the units are taken from what is available, if
/// they still are; returns the products touched, or `None` when the stock is not there.
pub async fn commit(
    connection: &mut PgConnection,
    order_id: Uuid,
    lines: &BTreeMap<Uuid, i32>,
) -> Result<Option<Touched>, Error> {
    let mut transaction = connection.begin().await?;
    let held: Vec<(Uuid, i32)> = sqlx::query_as(
        "SELECT product_id, quantity FROM reservations WHERE order_id = $1 AND status = 'held' ORDER BY product_id FOR UPDATE",
    )
    .bind(order_id)
    .fetch_all(&mut *transaction)
    .await?;
    let already: i64 =
        sqlx::query_scalar("SELECT count(*) FROM reservations WHERE order_id = $1 AND status = 'committed'")
            .bind(order_id)
            .fetch_one(&mut *transaction)
            .await?;
    if held.is_empty() && already > 0 {
        transaction.commit().await?;
        return Ok(Some(Vec::new()));
    }
    if !held.is_empty() {
        for (product_id, quantity) in &held {
            sqlx::query("UPDATE inventory SET on_hand = on_hand - $2, reserved = reserved - $2 WHERE product_id = $1")
                .bind(product_id)
                .bind(quantity)
                .execute(&mut *transaction)
                .await?;
        }
        sqlx::query(
            "UPDATE reservations SET status = 'committed', settled_at = now() WHERE order_id = $1 AND status = 'held'",
        )
        .bind(order_id)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        return Ok(Some(held.into_iter().map(|(product_id, _)| product_id).collect()));
    }
    // The hold lapsed: sell from what is available, all lines or none.
    for (product_id, quantity) in lines {
        let taken = sqlx::query(
            "UPDATE inventory SET on_hand = on_hand - $2 WHERE product_id = $1 AND on_hand - reserved >= $2",
        )
        .bind(product_id)
        .bind(quantity)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if taken == 0 {
            transaction.rollback().await?;
            return Ok(None);
        }
    }
    sqlx::query(
        "UPDATE reservations r SET status = 'committed', settled_at = now() FROM unnest($2::uuid[], $3::int[]) AS l(product_id, quantity) \
         WHERE r.order_id = $1 AND r.product_id = l.product_id",
    )
    .bind(order_id)
    .bind(lines.keys().copied().collect::<Vec<_>>())
    .bind(lines.values().copied().collect::<Vec<_>>())
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(Some(lines.keys().copied().collect()))
}

/// Puts the units of a confirmed, then cancelled, order back on hand (once).
pub async fn return_units(connection: &mut PgConnection, order_id: Uuid) -> Result<Touched, Error> {
    let mut transaction = connection.begin().await?;
    let sold: Vec<(Uuid, i32)> = sqlx::query_as(
        "SELECT product_id, quantity FROM reservations WHERE order_id = $1 AND status = 'committed' ORDER BY product_id FOR UPDATE",
    )
    .bind(order_id)
    .fetch_all(&mut *transaction)
    .await?;
    for (product_id, quantity) in &sold {
        sqlx::query("UPDATE inventory SET on_hand = on_hand + $2 WHERE product_id = $1")
            .bind(product_id)
            .bind(quantity)
            .execute(&mut *transaction)
            .await?;
    }
    sqlx::query(
        "UPDATE reservations SET status = 'returned', settled_at = now() WHERE order_id = $1 AND status = 'committed'",
    )
    .bind(order_id)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(sold.into_iter().map(|(product_id, _)| product_id).collect())
}

/// The retention rule of reservation requests: finished ones (rejected, or every hold
/// released, expired or returned) older than `age`. A committed hold is kept: a refund of its
/// order returns its units.
pub fn retention_rule(age: std::time::Duration) -> shop_kit::retention::Rule {
    shop_kit::retention::Rule::new(
        "reservation_requests",
        "DELETE FROM reservation_requests WHERE order_id IN (SELECT rr.order_id FROM reservation_requests rr \
         WHERE rr.created_at < now() - $1 * interval '1 second' AND NOT EXISTS (SELECT 1 FROM reservations r \
         WHERE r.order_id = rr.order_id AND r.status IN ('held', 'committed')) ORDER BY rr.created_at LIMIT $2)",
        age,
    )
}
