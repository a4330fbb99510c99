//! Payments in two steps, the second: a worker claims due payments with a lease (one
//! committed statement, `SKIP LOCKED`, so replicas share the work), calls the provider for
//! each outside any transaction, keeping up to `PAYMENT_WORKER_CONCURRENCY` calls in flight
//! (a slow call holds up no other), then records
//! each outcome in a short transaction of its own with its event (`PaymentSucceeded`,
//! `PaymentFailed`, `PaymentRefunded`) through the outbox.
//!
//! Every call carries the payment's idempotency key. A claim is counted before the call, so
//! a payment claimed again without an outcome (the worker died, the call timed out, the
//! record failed to commit) may have reached the provider: the worker asks the provider
//! ([`PaymentProvider::lookup`]) before calling again, and records what it answers. A
//! charge that keeps failing transiently is declined (`processing_error`) after
//! `PAYMENT_CHARGE_ATTEMPTS` claims, once a last lookup shows the provider took nothing; a
//! refund is retried until it succeeds (the money is the customer's). No database
//! connection is held while the provider is called.

use std::{sync::Arc, time::Duration};

use shop_kit::events::{Topics, enqueue};
use shop_proto::shop::events::v1::{PaymentFailed, PaymentRefunded, PaymentSucceeded};
use sqlx::PgPool;
use tokio::{sync::Notify, task::JoinSet, time::MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::{
    domain::{Claimed, PaymentStatus, Work},
    provider::{Charge, PaymentProvider, Transient},
    store,
};

/// How often the worker looks for due payments when nothing woke it.
const POLL: Duration = Duration::from_millis(250);

pub struct Worker {
    pub pool: PgPool,
    pub provider: Arc<dyn PaymentProvider>,
    pub topics: Topics,
    /// Claims of a charge before a transient failure declines it.
    pub charge_attempts: u32,
    /// Payments claimed, and provider calls in flight, at once.
    pub concurrency: usize,
    /// The longest one provider call may take.
    pub timeout: Duration,
    /// How long a claim holds (longer than the most one claim can take).
    pub lease: Duration,
    /// How long after the last failed attempt a charge is looked up a final time, then
    /// declined if the provider has nothing.
    pub decline_after: Duration,
    pub wake: Arc<Notify>,
}

/// What to write once the provider has answered.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Charged(Charge),
    Refunded,
    /// The provider refused the refund for good.
    RefundRefused(String),
    RetryAfter(Duration),
}

impl Worker {
    /// Keeps up to `concurrency` payments in work: claims as many as there is room for
    /// whenever a call ends, something was recorded as due (the consumer wakes it), or
    /// [`POLL`] passes. At a stop it claims nothing more and gives the calls in flight up to
    /// the provider timeout to end and be recorded; what is still running then is
    /// abandoned, and its lease brings it back (looked up first).
    pub async fn run(self, shutdown: CancellationToken) {
        // Each payment is a task of its own, so the calls and records progress while the
        // loop waits for a connection to claim more.
        let worker = Arc::new(self);
        let mut in_flight = JoinSet::new();
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut look = true;
        loop {
            let room = worker.concurrency.saturating_sub(in_flight.len());
            if look && room > 0 {
                let claimed = tokio::select! {
                    () = shutdown.cancelled() => break,
                    claimed = worker.claim(room) => claimed,
                };
                match claimed {
                    Ok(claimed) => {
                        // A full claim: more may be due.
                        look = claimed.len() == room;
                        for payment in claimed {
                            let worker = Arc::clone(&worker);
                            in_flight.spawn(async move { worker.work(payment).await });
                        }
                    }
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "cannot claim due payments; retrying");
                        look = false;
                    }
                }
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(ended) = in_flight.join_next(), if !in_flight.is_empty() => log_panic(ended),
                () = worker.wake.notified() => look = true,
                _ = poll.tick() => look = true,
            }
        }
        let drain = async {
            while let Some(ended) = in_flight.join_next().await {
                log_panic(ended);
            }
        };
        if tokio::time::timeout(worker.timeout, drain).await.is_err() {
            tracing::warn!("stopping with provider calls still running; their leases bring them back");
        }
    }

    /// Claims up to `room` due payments for the lease.
    async fn claim(&self, room: usize) -> anyhow::Result<Vec<Claimed>> {
        let mut connection = self.pool.acquire().await?;
        Ok(store::claim_due(&mut connection, i64::try_from(room).unwrap_or(1), self.lease).await?)
    }

    /// Calls the provider for one claimed payment and records the outcome. A record that
    /// fails leaves the payment to its lease: it is claimed again and looked up.
    ///
    /// It runs in a span that continues the trace of the event that made the work due, so
    /// its log lines, the provider call and the outcome event belong to that checkout's trace.
    async fn work(&self, payment: Claimed) {
        let span = tracing::info_span!("payment", payment.id = %payment.id, order.id = %payment.order_id,
            work = ?payment.work, otel.kind = "internal");
        payment.trace.continue_in(&span);
        async {
            let decision = self.decide(&payment).await;
            if let Err(error) = self.record(&payment, decision).await {
                tracing::warn!(payment.id = %payment.id, error = format!("{error:#}"), "payment outcome not recorded");
            }
        }
        .instrument(span)
        .await;
    }

    /// Calls the provider (asking first when an earlier claim may have reached it). A charge
    /// whose attempts are used up waits [`Worker::decline_after`], so that a call that
    /// timed out has landed at the provider if it ever will, then is looked up once more
    /// and declined only if the provider has nothing.
    async fn decide(&self, payment: &Claimed) -> Decision {
        if payment.work == Work::Charge && payment.claims > self.charge_attempts {
            return match self.timed("lookup", self.provider.lookup(&payment.charge_key())).await {
                Ok(Some(charge)) => Decision::Charged(charge),
                Ok(None) => {
                    tracing::warn!(payment.id = %payment.id, attempts = self.charge_attempts,
                        "charge failed transiently too often and the provider took nothing; declining");
                    Decision::Charged(Charge::Declined { reason: "processing_error".into() })
                }
                Err(error) => {
                    tracing::warn!(payment.id = %payment.id, %error, "cannot tell whether the charge was taken; asking again later");
                    Decision::RetryAfter(self.backoff(payment))
                }
            };
        }
        match (payment.work, self.call(payment).await) {
            (Work::Charge, Ok(charge)) => Decision::Charged(charge),
            (Work::Refund, Ok(Charge::Succeeded)) => Decision::Refunded,
            (Work::Refund, Ok(Charge::Declined { reason })) => Decision::RefundRefused(reason),
            (Work::Charge, Err(error)) if payment.claims >= self.charge_attempts => {
                tracing::info!(payment.id = %payment.id, %error, "last charge attempt failed; looking it up once more later");
                Decision::RetryAfter(self.decline_after)
            }
            (_, Err(error)) => {
                tracing::info!(payment.id = %payment.id, %error, attempt = payment.claims, "provider call failed; retrying");
                Decision::RetryAfter(self.backoff(payment))
            }
        }
    }

    async fn call(&self, payment: &Claimed) -> Result<Charge, Transient> {
        let key = payment.key();
        if payment.maybe_called_before()
            && let Some(recorded) = self.timed("lookup", self.provider.lookup(&key)).await?
        {
            tracing::info!(payment.id = %payment.id, key, "the provider had recorded this call; not calling again");
            return Ok(recorded);
        }
        match payment.work {
            Work::Charge => {
                let Some(card_token) = payment.card_token.as_deref() else {
                    return Ok(Charge::Declined { reason: "invalid_card_token".into() });
                };
                self.timed("charge", self.provider.charge(&key, card_token, payment.amount, &payment.currency)).await
            }
            Work::Refund => {
                let charge_key = payment.charge_key();
                let refund = self.provider.refund(&key, &charge_key, payment.amount, &payment.currency);
                self.timed("refund", refund).await.map(|()| Charge::Succeeded)
            }
        }
    }

    /// One provider call, bounded by the timeout, counted by operation and outcome.
    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, Transient>>,
    ) -> Result<T, Transient> {
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Transient(format!("no answer within {:?}", self.timeout))),
        };
        let outcome = if result.is_ok() { "ok" } else { "transient_error" };
        metrics::counter!("payment_provider_calls_total", "operation" => operation, "outcome" => outcome).increment(1);
        result
    }

    fn backoff(&self, payment: &Claimed) -> Duration {
        shop_kit::backoff::exponential(payment.claims, Duration::from_millis(200), Duration::from_secs(300))
    }

    /// Writes the decision and its event in one short transaction.
    async fn record(&self, payment: &Claimed, decision: Decision) -> anyhow::Result<()> {
        let mut transaction = self.pool.begin().await?;
        let key = payment.order_id.to_string();
        match decision {
            Decision::RetryAfter(pause) => store::retry_later(&mut transaction, payment, pause).await?,
            Decision::Charged(charge) => {
                let (status, reason) = PaymentStatus::of_charge(&charge);
                if !store::record_charge(&mut transaction, payment, status, reason.as_deref()).await? {
                    lost_claim(payment, status.as_str());
                } else {
                    let event = match charge {
                        Charge::Succeeded => self.topics.event(
                            key.clone(),
                            &PaymentSucceeded {
                                payment_id: payment.id.to_string(),
                                order_id: key,
                                user_id: payment.user_id.to_string(),
                                amount: Some(payment.amount().into()),
                            },
                        ),
                        Charge::Declined { reason } => self.topics.event(
                            key.clone(),
                            &PaymentFailed {
                                payment_id: payment.id.to_string(),
                                order_id: key,
                                user_id: payment.user_id.to_string(),
                                amount: Some(payment.amount().into()),
                                reason,
                            },
                        ),
                    };
                    enqueue(&mut transaction, &event).await?;
                    metrics::counter!("payments_recorded_total", "status" => status.as_str()).increment(1);
                    tracing::info!(order.id = %payment.order_id, payment.status = status.as_str(), "payment taken");
                }
            }
            Decision::RefundRefused(reason) => {
                if store::record_refund(&mut transaction, payment, Some(&reason)).await? {
                    metrics::counter!("payments_recorded_total", "status" => "refund_failed").increment(1);
                    tracing::error!(order.id = %payment.order_id, payment.id = %payment.id, %reason,
                        "the provider refused the refund for good: give the money back by hand (docs/runbook.md)");
                } else {
                    lost_claim(payment, "refund_failed");
                }
            }
            Decision::Refunded => {
                if !store::record_refund(&mut transaction, payment, None).await? {
                    lost_claim(payment, "refunded");
                } else {
                    let refunded = PaymentRefunded {
                        payment_id: payment.id.to_string(),
                        order_id: key.clone(),
                        user_id: payment.user_id.to_string(),
                        amount: Some(payment.amount().into()),
                    };
                    enqueue(&mut transaction, &self.topics.event(key, &refunded)).await?;
                    metrics::counter!("payments_recorded_total", "status" => "refunded").increment(1);
                    tracing::info!(order.id = %payment.order_id, "payment refunded");
                }
            }
        }
        transaction.commit().await?;
        Ok(())
    }
}

/// A write that found its claim taken over: the other claim records the outcome (looked up
/// under the same key, so it is the provider's).
fn lost_claim(payment: &Claimed, outcome: &str) {
    metrics::counter!("payment_claims_lost_total").increment(1);
    tracing::warn!(payment.id = %payment.id, claim = payment.claims, outcome,
        "the claim was taken over (its lease ran out); not recorded here");
}

fn log_panic(ended: Result<(), tokio::task::JoinError>) {
    if let Err(error) = ended
        && error.is_panic()
    {
        tracing::error!(%error, "a payment task panicked; its lease brings the payment back");
    }
}
