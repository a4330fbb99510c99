//! The exactly-once step: a consumed event's `ce_id` and its effect commit together, so a
//! redelivered event is recognised and skipped.

use std::collections::HashSet;

use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument as _;
use uuid::Uuid;

use super::{Consumes, Delivery, Outcome, Received};

/// Why a handler could not apply an event: the one place that says which failures are
/// retried and which go straight to the dead-letter topic. The error keeps its source chain.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying (a dependency hiccup); after the bounded retries it goes to the DLQ.
    #[error("{0:#}")]
    Retryable(anyhow::Error),
    /// Never going to work (a malformed field, contradicts our state): straight to the DLQ.
    #[error("{0:#}")]
    Permanent(anyhow::Error),
}

impl HandleError {
    /// A failure that another attempt may not have.
    pub fn retryable(error: impl Into<anyhow::Error>) -> Self {
        Self::Retryable(error.into())
    }

    /// A failure of the message itself.
    pub fn permanent(error: impl Into<anyhow::Error>) -> Self {
        Self::Permanent(error.into())
    }
}

/// The store failed: retried.
impl From<sqlx::Error> for HandleError {
    fn from(error: sqlx::Error) -> Self {
        Self::retryable(error)
    }
}

/// A field of the message is not a UUID: it never will be.
impl From<uuid::Error> for HandleError {
    fn from(error: uuid::Error) -> Self {
        Self::permanent(error)
    }
}

/// Applies events of the types in `Event`. The effect must be written through
/// `connection`, which is the same transaction that records the event as processed.
pub trait Handler: Send + Sync + 'static {
    /// The message types it handles (a [`consumes!`](crate::consumes) enum).
    type Event: Consumes;

    /// Runs after the effect has committed (cache invalidation, say); must not fail.
    fn after_commit<'a>(&'a self, _event: &'a Received<Self::Event>) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    fn handle<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        event: &'a Received<Self::Event>,
    ) -> BoxFuture<'a, Result<(), HandleError>>;
}

/// Why applying an event failed.
pub enum ApplyError {
    /// The store is unreachable: not the message's fault, retried without bound.
    Infrastructure(anyhow::Error),
    /// The handler refused or failed.
    Handler(HandleError),
}

/// How a consumer applies an event exactly once: record its `ce_id` and make the effect
/// atomically, answering [`Outcome::Duplicate`] for a `ce_id` seen before.
pub trait ApplyOnce: Send + Sync + 'static {
    /// The message types it applies.
    type Event: Consumes;

    fn apply<'a>(
        &'a self,
        consumer: &'a str,
        event: &'a Received<Self::Event>,
    ) -> BoxFuture<'a, Result<Outcome, ApplyError>>;

    /// Applies `deliveries` in order, answering one outcome each. An error means the runner
    /// applies every one of them again, one at a time with [`ApplyOnce::apply`]: what was
    /// applied before the error must then come back as [`Outcome::Duplicate`], never twice.
    ///
    /// The default applies them one after another (those before a failure stay applied);
    /// [`PgInbox`] applies them all in one transaction, or none.
    fn apply_batch<'a>(
        &'a self,
        consumer: &'a str,
        deliveries: &'a [Delivery<Self::Event>],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, ApplyError>> {
        Box::pin(async move {
            let mut outcomes = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                outcomes.push(self.apply(consumer, &delivery.event).instrument(delivery.span.clone()).await?);
            }
            Ok(outcomes)
        })
    }
}

/// The Postgres way: the `inbox` row and the handler's effect in one transaction.
pub struct PgInbox<H> {
    pool: PgPool,
    handler: H,
}

impl<H: Handler> PgInbox<H> {
    pub fn new(pool: PgPool, handler: H) -> Self {
        Self { pool, handler }
    }
}

fn infrastructure(error: sqlx::Error) -> ApplyError {
    ApplyError::Infrastructure(error.into())
}

impl<H: Handler> ApplyOnce for PgInbox<H> {
    type Event = H::Event;

    fn apply<'a>(
        &'a self,
        consumer: &'a str,
        event: &'a Received<H::Event>,
    ) -> BoxFuture<'a, Result<Outcome, ApplyError>> {
        Box::pin(async move {
            let mut transaction = self.pool.begin().await.map_err(infrastructure)?;
            let fresh = sqlx::query("INSERT INTO inbox (consumer, ce_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(consumer)
                .bind(event.ce_id)
                .execute(&mut *transaction)
                .await
                .map_err(infrastructure)?
                .rows_affected()
                == 1;
            if !fresh {
                return Ok(Outcome::Duplicate);
            }
            self.handler.handle(&mut transaction, event).await.map_err(ApplyError::Handler)?;
            transaction.commit().await.map_err(infrastructure)?;
            self.handler.after_commit(event).await;
            Ok(Outcome::Applied)
        })
    }

    /// One transaction: every inbox row in one statement, each new event's effect under its
    /// own span, one commit. A failure rolls all of it back.
    fn apply_batch<'a>(
        &'a self,
        consumer: &'a str,
        deliveries: &'a [Delivery<H::Event>],
    ) -> BoxFuture<'a, Result<Vec<Outcome>, ApplyError>> {
        Box::pin(async move {
            let mut transaction = self.pool.begin().await.map_err(infrastructure)?;
            let ids: Vec<Uuid> = deliveries.iter().map(|delivery| delivery.event.ce_id).collect();
            // A ce_id twice in one batch (a redriven dead letter next to its original) is
            // inserted once: the second copy finds the first and is a duplicate.
            let mut fresh: HashSet<Uuid> = sqlx::query_scalar(
                "INSERT INTO inbox (consumer, ce_id) SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING RETURNING ce_id",
            )
            .bind(consumer)
            .bind(&ids)
            .fetch_all(&mut *transaction)
            .await
            .map_err(infrastructure)?
            .into_iter()
            .collect();
            let mut outcomes = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                if fresh.remove(&delivery.event.ce_id) {
                    self.handler
                        .handle(&mut transaction, &delivery.event)
                        .instrument(delivery.span.clone())
                        .await
                        .map_err(ApplyError::Handler)?;
                    outcomes.push(Outcome::Applied);
                } else {
                    outcomes.push(Outcome::Duplicate);
                }
            }
            transaction.commit().await.map_err(infrastructure)?;
            for (delivery, outcome) in deliveries.iter().zip(&outcomes) {
                if *outcome == Outcome::Applied {
                    self.handler.after_commit(&delivery.event).instrument(delivery.span.clone()).await;
                }
            }
            Ok(outcomes)
        })
    }
}
