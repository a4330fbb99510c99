//! Delivery in two steps: a worker claims due notifications with a lease ([`LEASE`], one
//! committed statement, `SKIP LOCKED`, so several replicas can run workers), sends each
//! outside any transaction, then records the attempt in a short transaction of its own
//! (sent: marked, `NotificationDelivered` enqueued; failed: retried with exponential backoff
//! until `max_attempts`, then marked failed). No row lock or transaction is held while a
//! relay is slow. A crash or a failed commit after a send loses that one record: the
//! message is sent again when its lease ends (SMTP gives no idempotency); the others of the
//! batch were either recorded or never sent.

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
};
use shop_kit::events::Topics;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::{
    config::SmtpConfig,
    domain::{Channel, DeliveryStatus, Notification},
    store,
};

/// How many due notifications a worker claims at once.
const CLAIM_BATCH: i64 = 10;

/// How long a claim holds: the whole batch sent at [`SEND_TIMEOUT`] each, and a margin. A
/// worker that dies delays the messages it had claimed by at most this.
pub const LEASE: Duration = Duration::from_secs(10 * 10 + 30);

pub struct Worker {
    pool: PgPool,
    /// Where `NotificationDelivered` goes (with any test prefix).
    topics: Topics,
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    max_attempts: u32,
}

impl Worker {
    pub fn new(pool: PgPool, topics: Topics, smtp: Option<&SmtpConfig>, max_attempts: u32) -> anyhow::Result<Self> {
        let smtp = match smtp {
            None => None,
            Some(config) => {
                let from: Mailbox = config.from.parse().map_err(|error| anyhow::anyhow!("SMTP_FROM: {error}"))?;
                Some((config.transport.clone(), from))
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

    /// Claims up to [`CLAIM_BATCH`] due notifications, sends each and records it; returns how
    /// many were claimed.
    pub async fn deliver_due(&self) -> anyhow::Result<usize> {
        let due = {
            let mut connection = self.pool.acquire().await?;
            store::claim_due(&mut connection, CLAIM_BATCH, LEASE).await?
        };
        for notification in &due {
            // In the trace of the event the message answers: the send, its log lines and
            // NotificationDelivered belong to that trace.
            let span = tracing::info_span!("deliver", notification.id = %notification.id,
                template = %notification.template, otel.kind = "internal");
            notification.trace.continue_in(&span);
            async {
                let attempt = notification.attempts.saturating_add(1);
                let outcome = self.send(notification).await;
                self.record(notification, attempt, outcome).await
            }
            .instrument(span)
            .await?;
        }
        Ok(due.len())
    }

    /// Records one attempt in its own transaction.
    async fn record(
        &self,
        notification: &Notification,
        attempt: u32,
        outcome: Result<(), String>,
    ) -> anyhow::Result<()> {
        let mut transaction = self.pool.begin().await?;
        store::record_attempt(&mut transaction, notification.id, attempt, outcome.as_ref().err().map(String::as_str))
            .await?;
        match outcome {
            Ok(()) => {
                store::mark_sent(&mut transaction, notification.id, attempt).await?;
                let delivered = shop_proto::shop::events::v1::NotificationDelivered {
                    notification_id: notification.id.to_string(),
                    user_id: notification.user_id.to_string(),
                    template: notification.template.clone(),
                    channel: notification.channel.as_str().to_owned(),
                };
                let event = self.topics.event(notification.id.to_string(), &delivered);
                shop_kit::events::enqueue(&mut transaction, &event).await?;
                metrics::counter!("notifications_sent_total", "channel" => notification.channel.as_str()).increment(1);
            }
            Err(error) => {
                let status = DeliveryStatus::after_failed_attempt(attempt, self.max_attempts);
                let failed = status == DeliveryStatus::Failed;
                let pause = backoff(attempt);
                tracing::warn!(notification.id = %notification.id, attempt, failed, %error, "notification not delivered");
                store::mark_unsent(&mut transaction, notification.id, attempt, status, pause).await?;
            }
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn send(&self, notification: &Notification) -> Result<(), String> {
        match (notification.channel, &self.smtp, &notification.recipient) {
            (Channel::Email, Some((transport, from)), Some(recipient)) => {
                let to: Mailbox = recipient.parse().map_err(|error| format!("bad recipient: {error}"))?;
                let builder = Message::builder().from(from.clone()).to(to).subject(&notification.subject);
                let message = match &notification.html_body {
                    Some(html) => {
                        builder.multipart(MultiPart::alternative_plain_html(notification.body.clone(), html.clone()))
                    }
                    None => builder.body(notification.body.clone()),
                }
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
fn backoff(attempt: u32) -> Duration {
    shop_kit::backoff::exponential(attempt, Duration::from_millis(200), Duration::from_secs(300))
}
