//! SQL for payments. Functions take a connection, so the caller decides the transaction
//! (the outbox write shares it).

use std::time::Duration;

use chrono::{DateTime, Utc};
use shop_kit::telemetry::StoredContext;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{Claimed, NewPayment, Payment, PaymentStatus, Work},
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

/// Records a placed order's payment as `pending`, due at once; `false` if the order has a
/// payment already (a redelivered `OrderPlaced`).
pub async fn insert_pending(connection: &mut PgConnection, payment: &NewPayment) -> Result<bool, Error> {
    // The consumed event's trace, for the worker to continue.
    let trace = StoredContext::current();
    let inserted = sqlx::query(
        "INSERT INTO payments (id, order_id, user_id, amount, currency, status, card_token, traceparent, tracestate) \
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8) ON CONFLICT (order_id) DO NOTHING",
    )
    .bind(payment.id)
    .bind(payment.order_id)
    .bind(payment.user_id)
    .bind(payment.amount)
    .bind(&payment.currency)
    .bind(&payment.card_token)
    .bind(trace.traceparent)
    .bind(trace.tracestate)
    .execute(connection)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Asks for the refund of the order's payment: a succeeded payment becomes `refund_pending`,
/// due at once. Returns the status the payment had (`None`: the order has no payment), so
/// the caller can tell a refund asked for twice from one asked for too early.
pub async fn request_refund(connection: &mut PgConnection, order_id: Uuid) -> Result<Option<PaymentStatus>, Error> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM payments WHERE order_id = $1 FOR UPDATE")
        .bind(order_id)
        .fetch_optional(&mut *connection)
        .await?;
    let Some(status) = status else { return Ok(None) };
    let status = PaymentStatus::parse(&status)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("unknown payment status {status:?}")))?;
    if status == PaymentStatus::Succeeded {
        // The refund continues the trace of the cancellation that asked for it.
        let trace = StoredContext::current();
        sqlx::query(
            "UPDATE payments SET status = 'refund_pending', next_attempt_at = now(), updated_at = now(), \
                 traceparent = $2, tracestate = $3 \
             WHERE order_id = $1",
        )
        .bind(order_id)
        .bind(trace.traceparent)
        .bind(trace.tracestate)
        .execute(connection)
        .await?;
    }
    Ok(Some(status))
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: Uuid,
    order_id: Uuid,
    user_id: Uuid,
    amount: i64,
    currency: String,
    status: String,
    card_token: Option<String>,
    attempts: i32,
    refund_attempts: i32,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl TryFrom<ClaimedRow> for Claimed {
    type Error = Error;

    fn try_from(row: ClaimedRow) -> Result<Self, Error> {
        let (work, claims) = match row.status.as_str() {
            "pending" => (Work::Charge, row.attempts),
            "refund_pending" => (Work::Refund, row.refund_attempts),
            other => return Err(Error::Internal(anyhow::anyhow!("claimed a payment in status {other:?}"))),
        };
        Ok(Self {
            id: row.id,
            order_id: row.order_id,
            user_id: row.user_id,
            amount: row.amount,
            currency: row.currency,
            work,
            card_token: row.card_token,
            claims: u32::try_from(claims).unwrap_or(0),
            trace: StoredContext { traceparent: row.traceparent, tracestate: row.tracestate },
        })
    }
}

/// Claims up to `limit` due payments (charges and refunds) for `lease`, in one statement
/// that commits on its own (`SKIP LOCKED`: replicas claim different payments), counting
/// the claim before any provider call.
pub async fn claim_due(connection: &mut PgConnection, limit: i64, lease: Duration) -> Result<Vec<Claimed>, Error> {
    // The statuses are literals, not parameters, so the partial index `payments_due_idx`
    // serves a generic plan too.
    let rows: Vec<ClaimedRow> = sqlx::query_as(
        "UPDATE payments p SET next_attempt_at = now() + $2 * interval '1 millisecond', \
             attempts = p.attempts + (p.status = 'pending')::int, \
             refund_attempts = p.refund_attempts + (p.status = 'refund_pending')::int \
         FROM (SELECT id FROM payments WHERE status IN ('pending', 'refund_pending') AND next_attempt_at <= now() \
               ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due \
         WHERE p.id = due.id \
         RETURNING p.id, p.order_id, p.user_id, p.amount, p.currency, p.status, p.card_token, p.attempts, \
             p.refund_attempts, p.traceparent, p.tracestate",
    )
    .bind(limit)
    .bind(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
    .fetch_all(connection)
    .await?;
    let mut claimed = rows.into_iter().map(Claimed::try_from).collect::<Result<Vec<_>, _>>()?;
    claimed.sort_by_key(|payment| payment.id);
    Ok(claimed)
}

/// The condition that the claim `$2` still holds the payment: its work is still to be done
/// and no later claim has taken it over (a claim counts itself). Every write of the worker
/// carries it, so a worker whose lease ran out writes nothing.
const CLAIM_HELD: &str =
    "((status = 'pending' AND attempts = $2) OR (status = 'refund_pending' AND refund_attempts = $2))";

fn claims(claim: &Claimed) -> i32 {
    i32::try_from(claim.claims).unwrap_or(i32::MAX)
}

/// Records a charge's outcome; `false` if the claim no longer holds (its lease ran out and
/// another claim took the payment over, or recorded it).
pub async fn record_charge(
    connection: &mut PgConnection,
    claim: &Claimed,
    status: PaymentStatus,
    failure_reason: Option<&str>,
) -> Result<bool, Error> {
    let updated = sqlx::query(&format!(
        "UPDATE payments SET status = $3, failure_reason = $4, card_token = NULL, updated_at = now() \
         WHERE id = $1 AND status = 'pending' AND {CLAIM_HELD}"
    ))
    .bind(claim.id)
    .bind(claims(claim))
    .bind(status.as_str())
    .bind(failure_reason)
    .execute(connection)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Records a refund's outcome (`refunded`, or `refund_failed` with the provider's reason);
/// `false` if the claim no longer holds.
pub async fn record_refund(
    connection: &mut PgConnection,
    claim: &Claimed,
    refused: Option<&str>,
) -> Result<bool, Error> {
    let status = if refused.is_some() { PaymentStatus::RefundFailed } else { PaymentStatus::Refunded };
    let updated = sqlx::query(&format!(
        "UPDATE payments SET status = $3, failure_reason = coalesce($4, failure_reason), updated_at = now() \
         WHERE id = $1 AND status = 'refund_pending' AND {CLAIM_HELD}"
    ))
    .bind(claim.id)
    .bind(claims(claim))
    .bind(status.as_str())
    .bind(refused)
    .execute(connection)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// After a transient failure: the payment is due again after `pause` (its lease ends early),
/// if the claim still holds it.
pub async fn retry_later(connection: &mut PgConnection, claim: &Claimed, pause: Duration) -> Result<(), Error> {
    sqlx::query(&format!(
        "UPDATE payments SET next_attempt_at = now() + $3 * interval '1 millisecond' WHERE id = $1 AND {CLAIM_HELD}"
    ))
    .bind(claim.id)
    .bind(claims(claim))
    .bind(i64::try_from(pause.as_millis()).unwrap_or(i64::MAX))
    .execute(connection)
    .await?;
    Ok(())
}

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
