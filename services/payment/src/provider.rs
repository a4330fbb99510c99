//! Payment providers. A real processor is a drop-in: implement [`PaymentProvider`]. Every
//! call carries an idempotency key taken from the payment (the payment id for its charge,
//! `<payment id>-refund` for its refund), as real processors accept, and [`PaymentProvider::lookup`]
//! answers what the provider recorded under a key: after a crash between a charge and its
//! record, the worker asks instead of charging again.
//!
//! Two providers ship:
//! - [`TestProvider`], in-process: the test card tokens, with configurable latency,
//!   transient failures and timeouts (`TEST_PROVIDER_*`, see [`crate::config`]). Its ledger
//!   lives in memory, so it forgets at a restart.
//! - [`RemoteProvider`], a provider behind HTTP (`PAYMENT_PROVIDER_URL`) speaking the small
//!   protocol below. The crash tests and `cargo xtask chaos` run it against
//!   `shop_testkit::FakeProvider`, whose ledger outlives the payment service; it is also the
//!   shape of a real adapter.
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/charges` `{amount, currency, source}`, header `Idempotency-Key` | 200 `{"status":"succeeded"}`, 402 `{"status":"declined","reason":…}` |
//! | `POST /v1/refunds` `{amount, currency, charge}`, header `Idempotency-Key` | 200 `{"status":"succeeded"}` |
//! | `GET /v1/operations/{idempotency key}` | 200 with the recorded answer, 404 `{"status":"not_found"}` if none |
//!
//! Any other status (a 404 without that body too: a wrong path or a proxy must never read as
//! "nothing was charged"), a connection error or a timeout is transient. The same key with the
//! same request answers what it answered the first time and moves no money again.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::BoxFuture;
use rand::Rng as _;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};

/// What a charge led to (for a refund: [`Charge::Succeeded`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Charge {
    Succeeded,
    /// Refused for good: `reason` is a stable code (`card_declined`, `insufficient_funds`).
    Declined {
        reason: String,
    },
}

/// A failure worth retrying (network, timeout, processor hiccup). After a timeout the
/// provider may or may not have acted: only a [`PaymentProvider::lookup`] tells.
#[derive(Debug, thiserror::Error)]
#[error("transient provider failure: {0}")]
pub struct Transient(pub String);

pub trait PaymentProvider: Send + Sync + 'static {
    fn charge<'a>(
        &'a self,
        idempotency_key: &'a str,
        card_token: &'a str,
        amount: i64,
        currency: &'a str,
    ) -> BoxFuture<'a, Result<Charge, Transient>>;

    /// Gives back the whole charge recorded under `charge_key`.
    fn refund<'a>(
        &'a self,
        idempotency_key: &'a str,
        charge_key: &'a str,
        amount: i64,
        currency: &'a str,
    ) -> BoxFuture<'a, Result<(), Transient>>;

    /// What the provider recorded under `idempotency_key`, if anything.
    fn lookup<'a>(&'a self, idempotency_key: &'a str) -> BoxFuture<'a, Result<Option<Charge>, Transient>>;
}

/// How the in-process [`TestProvider`] misbehaves.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TestBehaviour {
    /// Added to every call.
    pub latency: Duration,
    /// The share of calls (0 to 1) that fail transiently without doing anything.
    pub failure_rate: f64,
    /// The share of charges and refunds (0 to 1) that take effect but never answer (the
    /// caller's timeout ends them): the ambiguous case a lookup resolves.
    pub timeout_rate: f64,
}

/// The built-in test provider: `tok_visa` succeeds, `tok_chargeDeclined` is declined,
/// `tok_insufficientFunds` is declined for insufficient funds, `tok_processingError`
/// fails transiently every time (so it is retried, then declined). Other tokens are
/// declined as invalid. Repeating a key answers the recorded outcome.
///
/// Its ledger is in memory, per process, and keeps the last [`LEDGER_CAPACITY`] keys: it is
/// for development and tests, never for money (each replica has its own).
#[derive(Default)]
pub struct TestProvider {
    behaviour: TestBehaviour,
    ledger: Mutex<Ledger>,
}

/// How many idempotency keys the test provider remembers.
pub const LEDGER_CAPACITY: usize = 100_000;

#[derive(Default)]
struct Ledger {
    outcomes: HashMap<String, Charge>,
    order: VecDeque<String>,
}

impl TestProvider {
    pub fn new(behaviour: TestBehaviour) -> Self {
        Self { behaviour, ledger: Mutex::new(Ledger::default()) }
    }

    /// The outcome of a test card token (`None`: a transient processor error).
    pub fn outcome_of(card_token: &str) -> Option<Charge> {
        let declined = |reason: &str| Some(Charge::Declined { reason: reason.to_owned() });
        match card_token {
            "tok_visa" => Some(Charge::Succeeded),
            "tok_chargeDeclined" => declined("card_declined"),
            "tok_insufficientFunds" => declined("insufficient_funds"),
            "tok_processingError" => None,
            _ => declined("invalid_card_token"),
        }
    }

    fn recorded(&self, key: &str) -> Option<Charge> {
        self.ledger.lock().map(|ledger| ledger.outcomes.get(key).cloned()).unwrap_or(None)
    }

    /// Latency, then a transient failure at `failure_rate`; then `act` takes effect and, at
    /// `timeout_rate`, the answer never comes.
    async fn call(&self, key: &str, act: impl FnOnce() -> Option<Charge>) -> Result<Charge, Transient> {
        if !self.behaviour.latency.is_zero() {
            tokio::time::sleep(self.behaviour.latency).await;
        }
        let (fail, hang) = {
            let mut random = rand::thread_rng();
            (random.gen_bool(self.behaviour.failure_rate), random.gen_bool(self.behaviour.timeout_rate))
        };
        if fail {
            return Err(Transient("the test provider failed on purpose".into()));
        }
        let outcome = match self.recorded(key) {
            Some(outcome) => outcome,
            None => {
                let outcome = act().ok_or_else(|| Transient("the processor had an error".into()))?;
                if let Ok(mut ledger) = self.ledger.lock()
                    && ledger.outcomes.insert(key.to_owned(), outcome.clone()).is_none()
                {
                    ledger.order.push_back(key.to_owned());
                    if ledger.order.len() > LEDGER_CAPACITY
                        && let Some(oldest) = ledger.order.pop_front()
                    {
                        ledger.outcomes.remove(&oldest);
                    }
                }
                outcome
            }
        };
        if hang {
            std::future::pending::<()>().await;
        }
        Ok(outcome)
    }
}

impl PaymentProvider for TestProvider {
    fn charge<'a>(
        &'a self,
        key: &'a str,
        card_token: &'a str,
        _amount: i64,
        _currency: &'a str,
    ) -> BoxFuture<'a, Result<Charge, Transient>> {
        Box::pin(self.call(key, || Self::outcome_of(card_token)))
    }

    fn refund<'a>(
        &'a self,
        key: &'a str,
        _charge_key: &'a str,
        _amount: i64,
        _currency: &'a str,
    ) -> BoxFuture<'a, Result<(), Transient>> {
        Box::pin(async move { self.call(key, || Some(Charge::Succeeded)).await.map(drop) })
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Charge>, Transient>> {
        Box::pin(async move { Ok(self.recorded(key)) })
    }
}

/// A provider behind HTTP, speaking the protocol in this module's documentation.
pub struct RemoteProvider {
    client: reqwest::Client,
    base: String,
}

#[derive(Serialize)]
struct ChargeRequest<'a> {
    amount: i64,
    currency: &'a str,
    source: &'a str,
}

#[derive(Serialize)]
struct RefundRequest<'a> {
    amount: i64,
    currency: &'a str,
    charge: &'a str,
}

/// The provider's answer to a charge, a refund or a lookup.
#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    reason: Option<String>,
}

impl Answer {
    fn outcome(self) -> Result<Charge, Transient> {
        match self.status.as_str() {
            "succeeded" => Ok(Charge::Succeeded),
            "declined" => Ok(Charge::Declined { reason: self.reason.unwrap_or_else(|| "declined".into()) }),
            other => Err(Transient(format!("the provider answered status {other:?}"))),
        }
    }
}

impl RemoteProvider {
    /// `base` is the provider's URL; each call gives up after `timeout`.
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build()?;
        Ok(Self { client, base: base.trim_end_matches('/').to_owned() })
    }

    async fn answer(&self, request: reqwest::RequestBuilder) -> Result<Option<Charge>, Transient> {
        let response = request.send().await.map_err(|error| Transient(format!("provider unreachable: {error}")))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            let body: Option<Answer> = response.json().await.ok();
            return match body {
                Some(answer) if answer.status == "not_found" => Ok(None),
                _ => Err(Transient("the provider answered 404 without not_found".into())),
            };
        }
        if !(status.is_success() || status == reqwest::StatusCode::PAYMENT_REQUIRED) {
            return Err(Transient(format!("the provider answered {status}")));
        }
        let answer: Answer =
            response.json().await.map_err(|error| Transient(format!("unreadable provider answer: {error}")))?;
        answer.outcome().map(Some)
    }
}

impl PaymentProvider for RemoteProvider {
    fn charge<'a>(
        &'a self,
        key: &'a str,
        card_token: &'a str,
        amount: i64,
        currency: &'a str,
    ) -> BoxFuture<'a, Result<Charge, Transient>> {
        Box::pin(async move {
            let request = self
                .client
                .post(format!("{}/v1/charges", self.base))
                .header("Idempotency-Key", key)
                .json(&ChargeRequest { amount, currency, source: card_token });
            self.answer(request).await?.ok_or_else(|| Transient("the provider has no charges endpoint".into()))
        })
    }

    fn refund<'a>(
        &'a self,
        key: &'a str,
        charge_key: &'a str,
        amount: i64,
        currency: &'a str,
    ) -> BoxFuture<'a, Result<(), Transient>> {
        Box::pin(async move {
            let request = self
                .client
                .post(format!("{}/v1/refunds", self.base))
                .header("Idempotency-Key", key)
                .json(&RefundRequest { amount, currency, charge: charge_key });
            match self.answer(request).await? {
                Some(Charge::Succeeded) => Ok(()),
                Some(Charge::Declined { reason }) => Err(Transient(format!("the refund was refused: {reason}"))),
                None => Err(Transient("the provider has no refunds endpoint".into())),
            }
        })
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Charge>, Transient>> {
        Box::pin(async move {
            // A key is a UUID with an optional suffix: nothing to escape.
            self.answer(self.client.get(format!("{}/v1/operations/{key}", self.base))).await
        })
    }
}

/// The provider the configuration names.
pub fn from_config(config: &crate::config::ProviderConfig) -> anyhow::Result<Arc<dyn PaymentProvider>> {
    Ok(match &config.url {
        Some(url) => Arc::new(RemoteProvider::new(url.expose_secret(), config.timeout)?),
        None => Arc::new(TestProvider::new(config.test.clone())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_test_provider_answers_a_repeated_key_with_the_recorded_outcome() {
        let provider = TestProvider::new(TestBehaviour::default());
        assert_eq!(provider.lookup("a").await.unwrap(), None);
        assert_eq!(provider.charge("a", "tok_visa", 100, "EUR").await.unwrap(), Charge::Succeeded);
        // The same key with another card: the first outcome, nothing charged again.
        assert_eq!(provider.charge("a", "tok_chargeDeclined", 100, "EUR").await.unwrap(), Charge::Succeeded);
        assert_eq!(provider.lookup("a").await.unwrap(), Some(Charge::Succeeded));
        let declined = provider.charge("b", "tok_insufficientFunds", 100, "EUR").await.unwrap();
        assert_eq!(declined, Charge::Declined { reason: "insufficient_funds".into() });
        assert!(provider.charge("c", "tok_processingError", 100, "EUR").await.is_err());
        assert_eq!(provider.lookup("c").await.unwrap(), None, "a processing error records nothing");
        provider.refund("a-refund", "a", 100, "EUR").await.unwrap();
        assert_eq!(provider.lookup("a-refund").await.unwrap(), Some(Charge::Succeeded));
    }

    #[tokio::test]
    async fn the_test_provider_fails_and_times_out_as_configured() {
        let failing = TestProvider::new(TestBehaviour { failure_rate: 1.0, ..TestBehaviour::default() });
        assert!(failing.charge("a", "tok_visa", 1, "EUR").await.is_err());
        assert_eq!(failing.lookup("a").await.unwrap(), None, "a failed call did nothing");

        let hanging = TestProvider::new(TestBehaviour { timeout_rate: 1.0, ..TestBehaviour::default() });
        let call = hanging.charge("a", "tok_visa", 1, "EUR");
        assert!(tokio::time::timeout(Duration::from_millis(50), call).await.is_err(), "no answer");
        assert_eq!(hanging.lookup("a").await.unwrap(), Some(Charge::Succeeded), "but the charge took effect");

        let slow = TestProvider::new(TestBehaviour { latency: Duration::from_millis(30), ..TestBehaviour::default() });
        let started = std::time::Instant::now();
        slow.charge("a", "tok_visa", 1, "EUR").await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
