//! SQL for payments. Functions take a connection, so the caller decides the transaction
//! (the outbox write shares it).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{NewPayment, Payment, PaymentStatus},
    error::Error,
};

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    order_id: Uuid,
    user_id: Uuid,
    amount: i64,
    currency: String,
    status: String,
    failure_reason: Option<String>,
    attempts: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<Row> for Payment {
    type Error = Error;

    fn try_from(row: Row) -> Result<Self, Error> {
        let status = PaymentStatus::parse(&row.status)
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("unknown payment status {:?}", row.status)))?;
        Ok(Self {
            id: row.id,
            order_id: row.order_id,
            user_id: row.user_id,
            amount: row.amount,
            currency: row.currency,
            status,
            failure_reason: row.failure_reason,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

const SELECT: &str = "SELECT id, order_id, user_id, amount, currency, status, failure_reason, attempts, \
    created_at, updated_at FROM payments";

/// Whether the order has a payment already (whatever its status).
pub async fn exists_for_order(connection: &mut PgConnection, order_id: Uuid) -> Result<bool, Error> {
    let id: Option<Uuid> = sqlx::query_scalar("SELECT id FROM payments WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(connection)
        .await?;
    Ok(id.is_some())
}

pub async fn insert(connection: &mut PgConnection, payment: &NewPayment) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO payments (id, order_id, user_id, amount, currency, status, failure_reason, attempts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(payment.id)
    .bind(payment.order_id)
    .bind(payment.user_id)
    .bind(payment.amount)
    .bind(&payment.currency)
    .bind(payment.status.as_str())
    .bind(&payment.failure_reason)
    .bind(i32::try_from(payment.attempts).unwrap_or(i32::MAX))
    .execute(connection)
    .await?;
    Ok(())
}

/// The order's succeeded payment, locked for the rest of the transaction (so a refund
/// happens once).
pub async fn succeeded_for_order(connection: &mut PgConnection, order_id: Uuid) -> Result<Option<Payment>, Error> {
    let row: Option<Row> = sqlx::query_as(&format!("{SELECT} WHERE order_id = $1 AND status = 'succeeded' FOR UPDATE"))
        .bind(order_id)
        .fetch_optional(connection)
        .await?;
    row.map(Payment::try_from).transpose()
}

pub async fn set_status(connection: &mut PgConnection, id: Uuid, status: PaymentStatus) -> Result<(), Error> {
    sqlx::query("UPDATE payments SET status = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(status.as_str())
        .execute(connection)
        .await?;
    Ok(())
}

/// Newest first, at most 100; `owner` limits to one user's payments, `order_id` to one order's.
/// One page of payments, newest first (ids are UUIDv7): `owner`'s only when given, the
/// order's only when given, those before `before` (the last id of the previous page); and
/// the id to continue from when there are more.
pub async fn page(
    connection: &mut PgConnection,
    owner: Option<Uuid>,
    order_id: Option<Uuid>,
    before: Option<Uuid>,
    limit: u32,
) -> Result<(Vec<Payment>, Option<Uuid>), Error> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "{SELECT} WHERE ($1::uuid IS NULL OR user_id = $1) AND ($2::uuid IS NULL OR order_id = $2) \
         AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
    ))
    .bind(owner)
    .bind(order_id)
    .bind(before)
    .bind(i64::from(limit) + 1)
    .fetch_all(connection)
    .await?;
    let (rows, next) = shop_kit::api::take_page(rows, limit, |row| row.id);
    Ok((rows.into_iter().map(Payment::try_from).collect::<Result<_, _>>()?, next))
}
