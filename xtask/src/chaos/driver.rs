//! The steady stream of checkouts that runs through every disruption: a few buyers, each
//! putting a product in its cart and placing an order (mostly with `tok_visa`, every tenth
//! with a declined card), over and over. Some orders are cancelled by their customer at once
//! (often while the payment is in flight) and some once they are confirmed, so that refunds
//! happen too.
//!
//! Errors are expected while something is down: a buyer counts them and goes on. A placement
//! is retried with the same `Idempotency-Key`, as a client would, a few times; what was
//! acknowledged (201) is recorded, so the checks can tell whether an acknowledged order was
//! lost.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// How many buyers place orders at once.
const BUYERS: usize = 4;
/// How many products the orders are spread over.
const PRODUCTS: usize = 6;
/// What each of those products has on hand when the load starts.
const STOCK: i64 = 1_000_000;
/// The pause between one buyer's checkouts.
const PACE: Duration = Duration::from_millis(150);
const PASSWORD: &str = "chaos-password-1";

/// The REST base URLs the buyers use.
pub(super) struct Targets {
    pub(super) user: String,
    pub(super) product: String,
    pub(super) cart: String,
    pub(super) order: String,
}

/// What the buyers saw.
#[derive(Default)]
pub(super) struct Tally {
    /// Orders answered 201, by id.
    pub(super) acknowledged: Vec<String>,
    /// Of those, placed with a card that is declined.
    pub(super) declined_cards: u64,
    /// Checkouts given up after their retries (no 201).
    pub(super) abandoned: u64,
    /// Orders whose cancellation was answered 200.
    pub(super) cancelled: Vec<String>,
    /// Requests that got no answer or a 5xx, by endpoint.
    pub(super) errors: BTreeMap<String, u64>,
    /// Answers 4xx, by endpoint, status and problem code (a cancellation that came too late,
    /// a cart emptied by the order just placed).
    pub(super) refusals: BTreeMap<String, u64>,
}

impl Tally {
    fn merge(&mut self, other: Self) {
        self.acknowledged.extend(other.acknowledged);
        self.declined_cards += other.declined_cards;
        self.abandoned += other.abandoned;
        self.cancelled.extend(other.cancelled);
        for (key, count) in other.errors {
            *self.errors.entry(key).or_default() += count;
        }
        for (key, count) in other.refusals {
            *self.refusals.entry(key).or_default() += count;
        }
    }

    pub(super) fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The stream: its buyers, ready or running.
pub(super) struct Load {
    runtime: tokio::runtime::Runtime,
    api: Arc<Api>,
    stop: Arc<AtomicBool>,
    ready: Vec<Buyer>,
    products: Arc<Vec<String>>,
    running: Vec<tokio::task::JoinHandle<Tally>>,
}

/// Registers the buyers and tops up the stock of the products they buy (as the admin);
/// [`Load::start`] sets them going.
pub(super) fn prepare(targets: Targets, admin: (&str, &str)) -> anyhow::Result<Load> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .context("cannot make an HTTP client")?;
    let api = Arc::new(Api { http, targets });
    let (ready, products) = runtime.block_on(register_and_stock(&api, admin))?;
    let stop = Arc::new(AtomicBool::new(false));
    Ok(Load { runtime, api, stop, ready, products: Arc::new(products), running: Vec::new() })
}

impl Load {
    /// Sets the buyers going.
    pub(super) fn start(&mut self) {
        for (index, buyer) in self.ready.drain(..).enumerate() {
            let buying = buy(self.api.clone(), buyer, index, self.products.clone(), self.stop.clone());
            self.running.push(self.runtime.spawn(buying));
        }
    }

    /// Stops the buyers after their current checkout and returns what they saw.
    pub(super) fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut tally = Tally::default();
        self.runtime.block_on(async {
            for buyer in self.running {
                if let Ok(Ok(seen)) = tokio::time::timeout(Duration::from_secs(30), buyer).await {
                    tally.merge(seen);
                }
            }
        });
        self.runtime.shutdown_timeout(Duration::from_secs(1));
        tally
    }
}

struct Api {
    http: reqwest::Client,
    targets: Targets,
}

struct Buyer {
    email: String,
    token: String,
}

/// An answer: its status and JSON body (`Null` if it had none), or `None` when the request
/// got no answer.
type Answer = Option<(u16, Value)>;

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Some((status, body))
}

fn text<'a>(body: &'a Value, field: &str) -> &'a str {
    body.get(field).and_then(Value::as_str).unwrap_or_default()
}

impl Api {
    async fn login(&self, email: &str) -> anyhow::Result<String> {
        let url = format!("{}/v1/auth/login", self.targets.user);
        match send(self.http.post(url).json(&json!({ "email": email, "password": PASSWORD }))).await {
            Some((200, body)) if !text(&body, "access_token").is_empty() => Ok(text(&body, "access_token").to_owned()),
            other => bail!("cannot log in {email}: {other:?}"),
        }
    }

    /// Sends what `build` makes with the buyer's token; on 401 logs in again and sends once more.
    async fn as_buyer(
        &self,
        buyer: &mut Buyer,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Answer {
        let answer = send(build(&self.http, &buyer.token)).await;
        if !matches!(answer, Some((401, _))) {
            return answer;
        }
        buyer.token = self.login(&buyer.email).await.ok()?;
        send(build(&self.http, &buyer.token)).await
    }
}

async fn register_and_stock(api: &Api, admin: (&str, &str)) -> anyhow::Result<(Vec<Buyer>, Vec<String>)> {
    let url = format!("{}/v1/auth/login", api.targets.user);
    let admin_token = match send(api.http.post(url).json(&json!({ "email": admin.0, "password": admin.1 }))).await {
        Some((200, body)) => text(&body, "access_token").to_owned(),
        other => bail!("cannot log in the admin {}: {other:?}", admin.0),
    };
    let url = format!("{}/v1/products?limit={PRODUCTS}", api.targets.product);
    let products: Vec<String> = match send(api.http.get(url)).await {
        Some((200, body)) => body
            .get("items")
            .and_then(Value::as_array)
            .map(|items| items.iter().map(|item| text(item, "id").to_owned()).collect())
            .unwrap_or_default(),
        other => bail!("cannot list the products: {other:?}"),
    };
    if products.len() < PRODUCTS {
        bail!("the catalog has {} products, chaos buys {PRODUCTS}", products.len());
    }
    for product in &products {
        let url = format!("{}/v1/products/{product}/stock", api.targets.product);
        let request = api.http.put(url).bearer_auth(&admin_token).json(&json!({ "on_hand": STOCK }));
        if !matches!(send(request).await, Some((200, _))) {
            bail!("cannot set the stock of product {product}");
        }
    }
    let mut buyers = Vec::new();
    for index in 0..BUYERS {
        let email = format!("chaos-{index}@chaos.shop.local");
        let url = format!("{}/v1/users", api.targets.user);
        let body = json!({ "email": email, "password": PASSWORD, "name": format!("Chaos buyer {index}") });
        match send(api.http.post(url).json(&body)).await {
            Some((201, _)) => {}
            other => bail!("cannot register {email}: {other:?}"),
        }
        let token = api.login(&email).await?;
        buyers.push(Buyer { email, token });
    }
    Ok((buyers, products))
}

/// One buyer's checkouts until `stop`.
async fn buy(
    api: Arc<Api>,
    mut buyer: Buyer,
    index: usize,
    products: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut awaiting_confirmation: VecDeque<(String, Instant)> = VecDeque::new();
    let mut round: usize = 0;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        if let Some((order, placed)) = awaiting_confirmation.pop_front()
            && let Some(order) = cancel_once_confirmed(&api, &mut buyer, &mut tally, order, placed).await
        {
            awaiting_confirmation.push_back(order);
        }
        let product = &products[(index + round) % products.len()];
        let quantity = 1 + round % 2;
        let url = format!("{}/v1/cart/items/{product}", api.targets.cart);
        let put = api.as_buyer(&mut buyer, |http, token| {
            http.put(&url).bearer_auth(token).json(&json!({ "quantity": quantity }))
        });
        if !tally.note("cart put", put.await, 200) {
            tokio::time::sleep(PACE * 2).await;
            continue;
        }
        let card = if round % 10 == 7 { "tok_chargeDeclined" } else { "tok_visa" };
        let key = format!("chaos-{index}-{round}");
        let Some(order) = place(&api, &mut buyer, &mut tally, &key, card).await else {
            tally.abandoned += 1;
            continue;
        };
        tally.acknowledged.push(order.clone());
        if card != "tok_visa" {
            tally.declined_cards += 1;
        }
        match round % 8 {
            3 => cancel(&api, &mut buyer, &mut tally, &order).await,
            1 | 5 => awaiting_confirmation.push_back((order, Instant::now())),
            _ => {}
        }
        tokio::time::sleep(PACE).await;
    }
    tally
}

impl Tally {
    /// Counts `answer` under `endpoint`; whether it was `expected`.
    fn note(&mut self, endpoint: &str, answer: Answer, expected: u16) -> bool {
        match answer {
            Some((status, _)) if status == expected => true,
            Some((status, body)) if status < 500 => {
                *self.refusals.entry(format!("{endpoint}: {status} {}", text(&body, "code"))).or_default() += 1;
                false
            }
            Some((status, _)) => {
                *self.errors.entry(format!("{endpoint}: {status}")).or_default() += 1;
                false
            }
            None => {
                *self.errors.entry(format!("{endpoint}: no answer")).or_default() += 1;
                false
            }
        }
    }
}

/// Places the cart as an order with `key`, retrying what may succeed later; the order's id
/// once answered 201.
async fn place(api: &Api, buyer: &mut Buyer, tally: &mut Tally, key: &str, card: &str) -> Option<String> {
    let url = format!("{}/v1/orders", api.targets.order);
    let body = json!({
        "shipping_address": { "name": "Chaos Buyer", "line1": "1 Fault Lane", "city": "London",
                              "postal_code": "SW1Y 4JH", "country": "GB" },
        "payment": { "card_token": card },
    });
    for attempt in 1..=5_u32 {
        let answer = api
            .as_buyer(buyer, |http, token| {
                http.post(&url).bearer_auth(token).header("idempotency-key", key).json(&body)
            })
            .await;
        let id = match &answer {
            Some((201, body)) => Some(text(body, "id").to_owned()),
            _ => None,
        };
        let retry = match &answer {
            None => true,
            Some((status, body)) => *status >= 500 || text(body, "code") == "request_in_progress",
        };
        if id.is_some() {
            return id;
        }
        // A retry's refusal is told apart: the same key must get the first answer.
        tally.note(if attempt == 1 { "order place" } else { "order place (retry)" }, answer, 201);
        if !retry {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(300) * attempt).await;
    }
    None
}

async fn cancel(api: &Api, buyer: &mut Buyer, tally: &mut Tally, order: &str) {
    let url = format!("{}/v1/orders/{order}/cancel", api.targets.order);
    let answer = api.as_buyer(buyer, |http, token| http.post(&url).bearer_auth(token)).await;
    if tally.note("order cancel", answer, 200) {
        tally.cancelled.push(order.to_owned());
    }
}

/// Cancels `order` if it is confirmed; gives it back to wait longer while it is pending (for
/// up to 20 s), and drops it otherwise.
async fn cancel_once_confirmed(
    api: &Api,
    buyer: &mut Buyer,
    tally: &mut Tally,
    order: String,
    placed: Instant,
) -> Option<(String, Instant)> {
    let url = format!("{}/v1/orders/{order}", api.targets.order);
    let answer = api.as_buyer(buyer, |http, token| http.get(&url).bearer_auth(token)).await;
    let status = match &answer {
        Some((200, body)) => text(body, "status").to_owned(),
        _ => String::new(),
    };
    match status.as_str() {
        "confirmed" => {
            cancel(api, buyer, tally, &order).await;
            None
        }
        "pending_payment" | "" if placed.elapsed() < Duration::from_secs(20) => {
            if status.is_empty() {
                tally.note("order read", answer, 200);
            }
            Some((order, placed))
        }
        _ => None,
    }
}
