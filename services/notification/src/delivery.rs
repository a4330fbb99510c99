//! Delivery: a worker sends due notifications over their channel, records every attempt,
//! and retries failures with exponential backoff until `max_attempts`, then marks them
//! failed. Rows are taken `FOR UPDATE SKIP LOCKED`, so several replicas can run workers.
//! A crash between a successful send and its record can send that message again (SMTP
//! gives no idempotency); every other path sends once.

use shop_kit::events::Topics;
use std::time::Duration;

use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor, message::Mailbox};
use rand::Rng as _;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::SmtpConfig;

pub struct Worker {
    pool: PgPool,
    /// Where `NotificationDelivered` goes (with any test prefix).
    topics: Topics,
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    max_attempts: u32,
}

#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    user_id: Uuid,
    channel: String,
    recipient: Option<String>,
    template: String,
    subject: String,
    body: String,
    attempts: i32,
}

impl Worker {
    pub fn new(pool: PgPool, topics: Topics, smtp: Option<&SmtpConfig>, max_attempts: u32) -> anyhow::Result<Self> {
        let smtp = match smtp {
            None => None,
            Some(config) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
                    .port(config.port)
                    .timeout(Some(Duration::from_secs(10)))
                    .build();
                let from: Mailbox = config.from.parse().map_err(|error| anyhow::anyhow!("SMTP_FROM: {error}"))?;
                Some((transport, from))
            }
        };
        Ok(Self { pool, topics, smtp, max_attempts })
    }

    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            match self.deliver_due().await {
                Ok(sent) if sent > 0 => continue,
                Ok(_) => {}
                Err(error) => tracing::warn!(error = format!("{error:#}"), "notification delivery failed; retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// Delivers up to 20 due notifications; returns how many were attempted.
    pub async fn deliver_due(&self) -> anyhow::Result<usize> {
        let mut transaction = self.pool.begin().await?;
        let due: Vec<Due> = sqlx::query_as(
            "SELECT id, user_id, channel, recipient, template, subject, body, attempts FROM notifications \
             WHERE status = 'pending' AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT 20 FOR UPDATE SKIP LOCKED",
        )
        .fetch_all(&mut *transaction)
        .await?;
        for notification in &due {
            let attempt = notification.attempts + 1;
            let outcome = self.send(notification).await;
            sqlx::query(
                "INSERT INTO delivery_attempts (notification_id, attempt, succeeded, error) VALUES ($1, $2, $3, $4)",
            )
            .bind(notification.id)
            .bind(attempt)
            .bind(outcome.is_ok())
            .bind(outcome.as_ref().err())
            .execute(&mut *transaction)
            .await?;
            match outcome {
                Ok(()) => {
                    sqlx::query(
                        "UPDATE notifications SET status = 'sent', attempts = $2, sent_at = now() WHERE id = $1",
                    )
                    .bind(notification.id)
                    .bind(attempt)
                    .execute(&mut *transaction)
                    .await?;
                    let delivered = shop_proto::shop::events::v1::NotificationDelivered {
                        notification_id: notification.id.to_string(),
                        user_id: notification.user_id.to_string(),
                        template: notification.template.clone(),
                        channel: notification.channel.clone(),
                    };
                    let event = self.topics.event(notification.id.to_string(), &delivered);
                    shop_kit::events::enqueue(&mut transaction, &event).await?;
                    metrics::counter!("notifications_sent_total", "channel" => notification.channel.clone())
                        .increment(1);
                }
                Err(error) => {
                    let failed = u32::try_from(attempt).unwrap_or(u32::MAX) >= self.max_attempts;
                    let pause = backoff(attempt);
                    tracing::warn!(notification.id = %notification.id, attempt, failed, %error, "notification not delivered");
                    sqlx::query(
                        "UPDATE notifications SET attempts = $2, status = CASE WHEN $3 THEN 'failed' ELSE 'pending' END, \
                         next_attempt_at = now() + $4 * interval '1 millisecond' WHERE id = $1",
                    )
                    .bind(notification.id)
                    .bind(attempt)
                    .bind(failed)
                    .bind(i64::try_from(pause.as_millis()).unwrap_or(i64::MAX))
                    .execute(&mut *transaction)
                    .await?;
                }
            }
        }
        transaction.commit().await?;
        Ok(due.len())
    }

    async fn send(&self, notification: &Due) -> Result<(), String> {
        match (notification.channel.as_str(), &self.smtp, &notification.recipient) {
            ("email", Some((transport, from)), Some(recipient)) => {
                let to: Mailbox = recipient.parse().map_err(|error| format!("bad recipient: {error}"))?;
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(&notification.subject)
                    .body(notification.body.clone())
                    .map_err(|error| error.to_string())?;
                transport.send(message).await.map(drop).map_err(|error| error.to_string())
            }
            _ => {
                tracing::info!(notification.id = %notification.id, template = %notification.template,
                    subject = %notification.subject, "notification delivered to the log");
                Ok(())
            }
        }
    }
}

/// 200 ms × 2^(attempt-1), at most 5 minutes, ±50 % jitter.
fn backoff(attempt: i32) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(12);
    let pause = Duration::from_millis(200).saturating_mul(2_u32.pow(exponent)).min(Duration::from_secs(300));
    pause.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
}
