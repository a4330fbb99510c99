//! The Redis read-through cache of single products.
//!
//! A read that misses loads the product from Postgres and stores it only if no write has
//! happened since the read began: every write bumps a per-product version *after* its
//! transaction commits and deletes the cached copy, and the store is a Lua script that
//! compares the version first. So a read racing a write can never put the old product
//! back, and a read after a write always sees the new one.
//!
//! In front of Redis sits a small in-process copy of the hottest products (the local
//! tier, `PRODUCT_LOCAL_CACHE_TTL`, 2 s by default), so a hit costs no network round trip.
//! Every invalidation also publishes the ids on the Redis channel
//! `<prefix>product-invalidations`; every replica subscribes and drops them, so a write made
//! by any replica reaches the others' local copies as fast as Redis delivers the message.
//! A generation counter, bumped under the same lock as each drop, keeps a read that fetched
//! the old value before the drop from putting it back (the local twin of the version script).
//! While the subscription is down the local tier is bypassed; its TTL bounds staleness even
//! if a message were lost on a half-open connection.
//!
//! When Redis fails, reads go to Postgres (and `/readyz` reports `degraded`); a failed
//! invalidation is logged, and the entry's TTL bounds how long it could be stale.

use std::{
    collections::HashMap,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use redis::{Script, aio::ConnectionManager};
use shop_kit::cache::{Breaker, KeyPrefix};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::Product;

const STORE_IF_UNCHANGED: &str = r"
if (redis.call('GET', KEYS[2]) or '0') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

#[derive(Clone)]
pub struct ProductCache {
    redis: ConnectionManager,
    prefix: KeyPrefix,
    ttl: Duration,
    script: Script,
    breaker: Arc<Breaker>,
    local: Arc<Local>,
}

/// What a cache lookup found.
pub enum Lookup {
    Hit(Box<Product>),
    /// Not cached; store with this ticket once loaded.
    Miss(Ticket),
    /// Redis is unavailable: load from Postgres and do not store.
    Unavailable,
}

/// What a store after a miss must still match: the Redis version and the local generation
/// seen before the lookup.
pub struct Ticket {
    version: String,
    generation: u64,
}

/// How many products the local tier holds at most (about 1 KiB each).
const LOCAL_CAPACITY: usize = 10_000;

/// The in-process tier.
struct Local {
    ttl: Duration,
    entries: RwLock<HashMap<Uuid, (Instant, Product)>>,
    /// Bumped, under the write lock, by every drop.
    generation: AtomicU64,
    /// The invalidation subscription is up; without it the tier is bypassed.
    live: AtomicBool,
}

impl Local {
    fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.live.load(Ordering::Acquire)
    }

    fn get(&self, id: Uuid) -> Option<Product> {
        if !self.enabled() {
            return None;
        }
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries.get(&id).filter(|(stored, _)| stored.elapsed() < self.ttl).map(|(_, product)| product.clone())
    }

    /// Keeps `product` unless something was dropped since `generation` was read.
    fn put(&self, product: &Product, generation: u64) {
        if !self.enabled() {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= LOCAL_CAPACITY {
            entries.retain(|_, (stored, _)| stored.elapsed() < self.ttl);
            if entries.len() >= LOCAL_CAPACITY {
                return;
            }
        }
        entries.insert(product.id, (Instant::now(), product.clone()));
    }

    /// Drops `ids` (all entries for `None`) and fences out reads that began before.
    fn drop_entries(&self, ids: Option<&[Uuid]>) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        match ids {
            Some(ids) => ids.iter().for_each(|id| drop(entries.remove(id))),
            None => entries.clear(),
        }
    }

    fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Release);
        self.drop_entries(None);
    }
}

impl ProductCache {
    /// `deadline` bounds each Redis call; after a failure the cache is skipped for 5 s.
    /// `local_ttl` is the in-process tier's (zero turns it off); it only serves once
    /// [`ProductCache::subscribe_invalidations`] runs.
    pub fn new(
        redis: ConnectionManager,
        prefix: KeyPrefix,
        ttl: Duration,
        local_ttl: Duration,
        deadline: Duration,
    ) -> Self {
        let breaker = Arc::new(Breaker::new(deadline, Duration::from_secs(5)));
        let local = Arc::new(Local {
            ttl: if ttl.is_zero() { Duration::ZERO } else { local_ttl.min(ttl) },
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            live: AtomicBool::new(false),
        });
        Self { redis, prefix, ttl, script: Script::new(STORE_IF_UNCHANGED), breaker, local }
    }

    fn keys(&self, id: Uuid) -> (String, String) {
        let id = id.to_string();
        (self.prefix.key(&["product", &id]), self.prefix.key(&["product-version", &id]))
    }

    fn channel(&self) -> String {
        self.prefix.key(&["product-invalidations"])
    }

    pub async fn get(&self, id: Uuid) -> Lookup {
        if let Some(product) = self.local.get(id) {
            metrics::counter!("product_cache_requests_total", "result" => "local_hit").increment(1);
            return Lookup::Hit(Box::new(product));
        }
        let generation = self.local.generation.load(Ordering::Acquire);
        let (key, version_key) = self.keys(id);
        let mut redis = self.redis.clone();
        let answer: Result<(Option<String>, Option<String>), _> =
            self.breaker.call(redis::pipe().get(&key).get(&version_key).query_async(&mut redis)).await;
        let miss = |version: Option<String>| Ticket { version: version.unwrap_or_else(|| "0".into()), generation };
        match answer {
            Ok((Some(json), version)) => match serde_json::from_str::<Product>(&json) {
                Ok(product) => {
                    metrics::counter!("product_cache_requests_total", "result" => "hit").increment(1);
                    self.local.put(&product, generation);
                    Lookup::Hit(Box::new(product))
                }
                // An entry we cannot read (an older format): overwrite it.
                Err(_) => Lookup::Miss(miss(version)),
            },
            Ok((None, version)) => {
                metrics::counter!("product_cache_requests_total", "result" => "miss").increment(1);
                Lookup::Miss(miss(version))
            }
            Err(error) => {
                metrics::counter!("product_cache_requests_total", "result" => "error").increment(1);
                tracing::debug!(%error, "product cache unavailable; reading from Postgres");
                Lookup::Unavailable
            }
        }
    }

    /// Stores a product loaded after a miss, unless a write has happened since.
    /// A zero TTL stores nothing: every read misses.
    pub async fn store(&self, product: &Product, ticket: Ticket) {
        if self.ttl.is_zero() {
            return;
        }
        let Ticket { version, generation } = ticket;
        let version = version.as_str();
        let (key, version_key) = self.keys(product.id);
        let Ok(json) = serde_json::to_string(product) else { return };
        let mut redis = self.redis.clone();
        let mut invocation = self.script.key(&key);
        invocation
            .key(&version_key)
            .arg(version)
            .arg(json)
            .arg(u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        let stored: Result<i32, _> = self.breaker.call(invocation.invoke_async(&mut redis)).await;
        match stored {
            Ok(1) => self.local.put(product, generation),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot store a product in the cache"),
        }
    }

    /// Call after the write's transaction has committed.
    pub async fn invalidate(&self, ids: &[Uuid]) {
        if ids.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for id in ids {
            let (key, version_key) = self.keys(*id);
            pipe.incr(&version_key, 1).ignore().expire(&version_key, 86_400).ignore().del(&key).ignore();
        }
        let message = ids.iter().map(Uuid::to_string).collect::<Vec<_>>().join(",");
        pipe.publish(self.channel(), message).ignore();
        let mut redis = self.redis.clone();
        // Attempted even while the breaker is open: a missed invalidation is worse than a slow write.
        let attempt = tokio::time::timeout(Duration::from_secs(1), pipe.query_async::<()>(&mut redis)).await;
        // After Redis has dropped its copy: a read that starts now finds the new product, and
        // one that fetched the old copy before is fenced out by the generation.
        self.local.drop_entries(Some(ids));
        if let Err(error) =
            attempt.map_err(|_| "timed out".to_owned()).and_then(|result| result.map_err(|e| e.to_string()))
        {
            tracing::error!(%error, products = ids.len(), "cannot invalidate cached products; they may be stale until their TTL");
        }
    }

    /// Keeps the local tier in step with every replica's writes until `shutdown`: subscribes
    /// to the invalidation channel (the tier serves only while subscribed), drops what each
    /// message names, pings every 2 s, and resubscribes with backoff after a failure.
    pub async fn subscribe_invalidations(self, client: redis::Client, shutdown: CancellationToken) {
        if self.local.ttl.is_zero() {
            return;
        }
        let channel = self.channel();
        let mut failures = 0_u32;
        loop {
            let ended = tokio::select! {
                () = shutdown.cancelled() => {
                    self.local.set_live(false);
                    return;
                }
                ended = self.invalidation_session(&client, &channel) => ended,
            };
            self.local.set_live(false);
            match ended {
                // It was up and went quiet: reconnect at once.
                Ok(()) => failures = 0,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(%error, "product invalidation subscription lost; local cache off until it is back");
                }
            }
            let pause = Duration::from_millis(100).saturating_mul(2_u32.saturating_pow(failures.min(6)));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One subscription, until it fails (`Ok` if it was up and then went quiet).
    async fn invalidation_session(&self, client: &redis::Client, channel: &str) -> redis::RedisResult<()> {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        let (mut sink, mut messages) = pubsub.split();
        self.local.set_live(true);
        let mut ping = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { return Ok(()) };
                    let ids: Vec<Uuid> = String::from_utf8_lossy(message.get_payload_bytes())
                        .split(',')
                        .filter_map(|id| Uuid::parse_str(id).ok())
                        .collect();
                    self.local.drop_entries(Some(&ids));
                }
                _ = ping.tick() => {
                    // A subscribed connection answers PING with an array: take any value.
                    match tokio::time::timeout(Duration::from_secs(1), sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return Err(error),
                        Err(_) => return Ok(()),
                    }
                }
            }
        }
    }
}
