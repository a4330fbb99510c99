//! [`FakeProvider`]: a payment provider over HTTP, in the test process, speaking the protocol
//! of `payment_service::provider::RemoteProvider` (charges, refunds and lookups, each keyed
//! by an `Idempotency-Key`). Its ledger lives in the test, so it outlives a payment service
//! that is SIGKILLed, and it counts what happened: which charges took effect, how often each
//! key was asked for. It can be slow, fail, or hang before or after an operation takes effect.
//!
//! A charge with the card token `tok_chargeDeclined` is declined (`card_declined`); every
//! other token succeeds.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use serde_json::{Value, json};

use crate::TestServer;

/// Where a hanging provider stops answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hang {
    /// The request arrives and nothing happens: no money moves and no answer comes.
    BeforeEffect,
    /// The money moves and no answer comes.
    AfterEffect,
}

/// One operation that took effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// `charge` or `refund`.
    pub kind: &'static str,
    pub idempotency_key: String,
    pub amount: i64,
    pub currency: String,
    /// `succeeded` or `declined`.
    pub status: &'static str,
}

#[derive(Default)]
struct Ledger {
    latency: Duration,
    fail_next: u32,
    hang: Option<Hang>,
    /// What took effect, in order; by key, its index.
    operations: Vec<Operation>,
    by_key: HashMap<String, usize>,
    /// Requests per key and kind (`charge`, `refund`, `lookup`), effective or not.
    requests: HashMap<(String, &'static str), u32>,
    in_flight: usize,
}

pub struct FakeProvider {
    ledger: Arc<Mutex<Ledger>>,
    released: Arc<tokio::sync::Notify>,
    server: TestServer,
}

#[derive(Clone)]
struct Shared {
    ledger: Arc<Mutex<Ledger>>,
    released: Arc<tokio::sync::Notify>,
}

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeProvider {
    /// Serves on `127.0.0.1:0`. Must run inside a Tokio runtime.
    pub async fn start() -> Self {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let released = Arc::new(tokio::sync::Notify::new());
        let routes = Router::new()
            .route("/v1/charges", post(charge))
            .route("/v1/refunds", post(refund))
            .route("/v1/operations/{key}", get(lookup))
            .with_state(Shared { ledger: Arc::clone(&ledger), released: Arc::clone(&released) });
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("cannot bind the fake provider");
        let address = listener.local_addr().expect("a bound listener has an address");
        let server = TestServer::spawn(address, move |shutdown| async move {
            axum::serve(listener, routes).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
            Ok(())
        });
        Self { ledger, released, server }
    }

    /// `PAYMENT_PROVIDER_URL`.
    pub fn url(&self) -> String {
        self.server.url("")
    }

    /// Every charge and refund takes this long to answer (after it took effect).
    pub fn slow(&self, latency: Duration) {
        lock(&self.ledger).latency = latency;
    }

    /// The next `count` requests answer 503 and do nothing.
    pub fn fail_next(&self, count: u32) {
        lock(&self.ledger).fail_next = count;
    }

    /// From now on charges and refunds hang (`Some`) at that point until
    /// [`FakeProvider::release`]; or answer again (`None`; the requests already hanging stay
    /// hung).
    pub fn hang(&self, hang: Option<Hang>) {
        lock(&self.ledger).hang = hang;
    }

    /// Lets the hanging requests go on: those hung before their effect answer 503 having
    /// done nothing, those hung after it answer what took effect.
    pub fn release(&self) {
        self.released.notify_waiters();
    }

    /// Charges and refunds received and not answered yet.
    pub fn in_flight(&self) -> usize {
        lock(&self.ledger).in_flight
    }

    /// The operations that took effect, in order.
    pub fn operations(&self) -> Vec<Operation> {
        lock(&self.ledger).operations.clone()
    }

    /// How many `kind` requests (`charge`, `refund`, `lookup`) came with `key`.
    pub fn requests(&self, key: &str, kind: &str) -> u32 {
        let ledger = lock(&self.ledger);
        ledger.requests.iter().filter(|((k, kind_), _)| k == key && *kind_ == kind).map(|(_, count)| *count).sum()
    }
}

fn answer(operation: &Operation) -> (StatusCode, Json<Value>) {
    let status = if operation.status == "succeeded" { StatusCode::OK } else { StatusCode::PAYMENT_REQUIRED };
    let reason = (operation.status == "declined").then_some("card_declined");
    (status, Json(json!({ "status": operation.status, "reason": reason })))
}

/// Counts the request, then fails, hangs or applies `effect` once per key, as configured.
async fn operate(
    shared: &Shared,
    kind: &'static str,
    headers: &HeaderMap,
    body: &Value,
    status: &'static str,
) -> (StatusCode, Json<Value>) {
    let Some(key) = headers.get("idempotency-key").and_then(|value| value.to_str().ok()).map(str::to_owned) else {
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": "Idempotency-Key is required" })));
    };
    let ledger = &shared.ledger;
    let (operation, latency, hang) = {
        let mut ledger = lock(ledger);
        *ledger.requests.entry((key.clone(), kind)).or_default() += 1;
        if ledger.fail_next > 0 {
            ledger.fail_next -= 1;
            return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": "try again" })));
        }
        let hang = ledger.hang;
        ledger.in_flight += 1;
        if hang == Some(Hang::BeforeEffect) {
            (None, ledger.latency, hang)
        } else {
            let index = match ledger.by_key.get(&key) {
                Some(index) => *index,
                None => {
                    let operation = Operation {
                        kind,
                        idempotency_key: key.clone(),
                        amount: body["amount"].as_i64().unwrap_or_default(),
                        currency: body["currency"].as_str().unwrap_or_default().to_owned(),
                        status,
                    };
                    ledger.operations.push(operation);
                    let index = ledger.operations.len() - 1;
                    ledger.by_key.insert(key.clone(), index);
                    index
                }
            };
            (Some(ledger.operations[index].clone()), ledger.latency, hang)
        }
    };
    if hang.is_some() {
        shared.released.notified().await;
    }
    tokio::time::sleep(latency).await;
    lock(ledger).in_flight -= 1;
    match operation {
        Some(operation) => answer(&operation),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": "unreachable" }))),
    }
}

async fn charge(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let status = if body["source"] == "tok_chargeDeclined" { "declined" } else { "succeeded" };
    operate(&shared, "charge", &headers, &body, status).await
}

async fn refund(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    operate(&shared, "refund", &headers, &body, "succeeded").await
}

async fn lookup(State(shared): State<Shared>, Path(key): Path<String>) -> (StatusCode, Json<Value>) {
    let mut ledger = lock(&shared.ledger);
    *ledger.requests.entry((key.clone(), "lookup")).or_default() += 1;
    match ledger.by_key.get(&key) {
        Some(index) => answer(&ledger.operations[*index]),
        None => (StatusCode::NOT_FOUND, Json(json!({ "status": "not_found" }))),
    }
}
