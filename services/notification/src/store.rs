//! SQL for recipients, notifications and delivery attempts. Functions take a connection,
//! so the caller decides the transaction (the outbox write shares it).

use std::time::Duration;

use chrono::{DateTime, Utc};
use shop_kit::telemetry::StoredContext;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    domain::{Channel, DeliveryStatus, NewNotification, Notification},
    error::Error,
};

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    user_id: Uuid,
    order_id: Option<Uuid>,
    channel: String,
    recipient: Option<String>,
    template: String,
    subject: String,
    body: String,
    html_body: Option<String>,
    status: String,
    attempts: i32,
    created_at: DateTime<Utc>,
    /// Only the delivery worker's claim reads these.
    #[sqlx(default)]
    traceparent: Option<String>,
    #[sqlx(default)]
    tracestate: Option<String>,
}

impl TryFrom<Row> for Notification {
    type Error = Error;

    fn try_from(row: Row) -> Result<Self, Error> {
        let channel = Channel::parse(&row.channel)
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("unknown notification channel {:?}", row.channel)))?;
        let status = DeliveryStatus::parse(&row.status)
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("unknown notification status {:?}", row.status)))?;
        Ok(Self {
            id: row.id,
            user_id: row.user_id,
            order_id: row.order_id,
            channel,
            recipient: row.recipient,
            template: row.template,
            subject: row.subject,
            body: row.body,
            html_body: row.html_body,
            status,
            attempts: u32::try_from(row.attempts).unwrap_or(0),
            created_at: row.created_at,
            trace: StoredContext { traceparent: row.traceparent, tracestate: row.tracestate },
        })
    }
}

const SELECT: &str = "SELECT id, user_id, order_id, channel, recipient, template, subject, body, html_body, status, \
    attempts, created_at FROM notifications";

/// Learns (or updates) where a user's email goes.
pub async fn save_recipient(
    connection: &mut PgConnection,
    user_id: Uuid,
    email: &str,
    name: &str,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO recipients (user_id, email, name) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, name = excluded.name",
    )
    .bind(user_id)
    .bind(email)
    .bind(name)
    .execute(connection)
    .await?;
    Ok(())
}

/// The user's email address, if a `UserRegistered` taught it.
pub async fn recipient_email(connection: &mut PgConnection, user_id: Uuid) -> Result<Option<String>, Error> {
    let email = sqlx::query_scalar("SELECT email FROM recipients WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(connection)
        .await?;
    Ok(email)
}

/// Stores a pending notification, unless its event or its (order, template) has one
/// already; then wakes the delivery workers.
pub async fn insert(connection: &mut PgConnection, notification: &NewNotification) -> Result<(), Error> {
    // Either key may conflict: the event was seen before (a redelivery the inbox did not
    // catch) or the customer already has this message about this order.
    let trace = StoredContext::current();
    sqlx::query(
        "INSERT INTO notifications (id, event_id, user_id, channel, recipient, template, subject, body, order_id, \
         html_body, traceparent, tracestate) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT DO NOTHING",
    )
    .bind(notification.id)
    .bind(notification.event_id)
    .bind(notification.user_id)
    .bind(notification.channel.as_str())
    .bind(&notification.recipient)
    .bind(&notification.template)
    .bind(&notification.subject)
    .bind(&notification.body)
    .bind(notification.order_id)
    .bind(&notification.html_body)
    // The consumed event's trace, for the delivery worker to continue.
    .bind(trace.traceparent)
    .bind(trace.tracestate)
    .execute(&mut *connection)
    .await?;
    sqlx::query("SELECT pg_notify('shop_notifications', '')").execute(connection).await?;
    Ok(())
}

/// Up to `limit` pending notifications whose next attempt is due, oldest due first,
/// locked for the rest of the transaction (rows other workers hold are skipped).
/// Claims up to `limit` due notifications for `lease`: their next attempt moves `lease` ahead,
/// so no other worker takes them meanwhile, and one statement commits the claim before
/// anything is sent. A worker that dies leaves them due again when the lease ends.
pub async fn claim_due(connection: &mut PgConnection, limit: i64, lease: Duration) -> Result<Vec<Notification>, Error> {
    // `'pending'` is a literal, not a parameter: a generic plan could not use the partial
    // index `notifications_due_idx` otherwise.
    let rows: Vec<Row> = sqlx::query_as(
        "UPDATE notifications n SET next_attempt_at = now() + $2 * interval '1 millisecond' \
         FROM (SELECT id FROM notifications WHERE status = 'pending' AND next_attempt_at <= now() \
               ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due \
         WHERE n.id = due.id \
         RETURNING n.id, n.user_id, n.order_id, n.channel, n.recipient, n.template, n.subject, n.body, n.html_body, n.status, \
         n.attempts, n.created_at, n.traceparent, n.tracestate",
    )
    .bind(limit)
    .bind(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
    .fetch_all(connection)
    .await?;
    let mut claimed = rows.into_iter().map(Notification::try_from).collect::<Result<Vec<_>, _>>()?;
    claimed.sort_by_key(|notification| notification.id);
    Ok(claimed)
}

/// Records attempt number `attempt` of a delivery; `error` is why it failed, if it did.
pub async fn record_attempt(
    connection: &mut PgConnection,
    id: Uuid,
    attempt: u32,
    error: Option<&str>,
) -> Result<(), Error> {
    sqlx::query("INSERT INTO delivery_attempts (notification_id, attempt, succeeded, error) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
        .bind(error.is_none())
        .bind(error)
        .execute(connection)
        .await?;
    Ok(())
}

/// Marks a notification sent after `attempts` attempts.
pub async fn mark_sent(connection: &mut PgConnection, id: Uuid, attempts: u32) -> Result<(), Error> {
    sqlx::query("UPDATE notifications SET status = $3, attempts = $2, sent_at = now() WHERE id = $1")
        .bind(id)
        .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
        .bind(DeliveryStatus::Sent.as_str())
        .execute(connection)
        .await?;
    Ok(())
}

/// After a failed attempt: `status` (pending or failed), the next attempt `pause` from now.
pub async fn mark_unsent(
    connection: &mut PgConnection,
    id: Uuid,
    attempts: u32,
    status: DeliveryStatus,
    pause: Duration,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE notifications SET attempts = $2, status = $3, \
         next_attempt_at = now() + $4 * interval '1 millisecond' WHERE id = $1",
    )
    .bind(id)
    .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
    .bind(status.as_str())
    .bind(i64::try_from(pause.as_millis()).unwrap_or(i64::MAX))
    .execute(connection)
    .await?;
    Ok(())
}

/// A user's notifications, newest first, at most 100.
/// One page of `user_id`'s notifications, newest first (ids are UUIDv7), those before
/// `before` (the last id of the previous page); and the id to continue from when there are more.
pub async fn page_for_user(
    connection: &mut PgConnection,
    user_id: Uuid,
    before: Option<Uuid>,
    limit: u32,
) -> Result<(Vec<Notification>, Option<Uuid>), Error> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "{SELECT} WHERE user_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(user_id)
    .bind(before)
    .bind(i64::from(limit) + 1)
    .fetch_all(connection)
    .await?;
    let (rows, next) = shop_kit::api::take_page(rows, limit, |row| row.id);
    Ok((rows.into_iter().map(Notification::try_from).collect::<Result<_, _>>()?, next))
}
