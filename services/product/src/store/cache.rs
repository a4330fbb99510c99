//! The Redis read-through cache of single products.
//!
//! A read that misses loads the product from Postgres and stores it only if no write has
//! happened since the read began: every write bumps a per-product version *after* its
//! transaction commits and deletes the cached copy, and the store is a Lua script that
//! compares the version first. So a read racing a write can never put the old product
//! back, and a read after a write always sees the new one.
//!
//! When Redis fails, reads go to Postgres (and `/readyz` reports `degraded`); a failed
//! invalidation is logged, and the entry's TTL bounds how long it could be stale.

use std::time::Duration;

use redis::{Script, aio::ConnectionManager};
use shop_kit::cache::{Breaker, KeyPrefix};
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
    breaker: std::sync::Arc<Breaker>,
}

/// What a cache lookup found.
pub enum Lookup {
    Hit(Box<Product>),
    /// Not cached; store with this version once loaded.
    Miss {
        version: String,
    },
    /// Redis is unavailable: load from Postgres and do not store.
    Unavailable,
}

impl ProductCache {
    /// `deadline` bounds each Redis call; after a failure the cache is skipped for 5 s.
    pub fn new(redis: ConnectionManager, prefix: KeyPrefix, ttl: Duration, deadline: Duration) -> Self {
        let breaker = std::sync::Arc::new(Breaker::new(deadline, Duration::from_secs(5)));
        Self { redis, prefix, ttl, script: Script::new(STORE_IF_UNCHANGED), breaker }
    }

    fn keys(&self, id: Uuid) -> (String, String) {
        let id = id.to_string();
        (self.prefix.key(&["product", &id]), self.prefix.key(&["product-version", &id]))
    }

    pub async fn get(&self, id: Uuid) -> Lookup {
        let (key, version_key) = self.keys(id);
        let mut redis = self.redis.clone();
        let answer: Result<(Option<String>, Option<String>), _> =
            self.breaker.call(redis::pipe().get(&key).get(&version_key).query_async(&mut redis)).await;
        match answer {
            Ok((Some(json), version)) => match serde_json::from_str(&json) {
                Ok(product) => {
                    metrics::counter!("product_cache_requests_total", "result" => "hit").increment(1);
                    Lookup::Hit(Box::new(product))
                }
                // An entry we cannot read (an older format): overwrite it.
                Err(_) => Lookup::Miss { version: version.unwrap_or_else(|| "0".into()) },
            },
            Ok((None, version)) => {
                metrics::counter!("product_cache_requests_total", "result" => "miss").increment(1);
                Lookup::Miss { version: version.unwrap_or_else(|| "0".into()) }
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
    pub async fn store(&self, product: &Product, version: &str) {
        if self.ttl.is_zero() {
            return;
        }
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
        if let Err(error) = stored {
            tracing::warn!(%error, "cannot store a product in the cache");
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
        let mut redis = self.redis.clone();
        // Attempted even while the breaker is open: a missed invalidation is worse than a slow write.
        let attempt = tokio::time::timeout(Duration::from_secs(1), pipe.query_async::<()>(&mut redis)).await;
        if let Err(error) =
            attempt.map_err(|_| "timed out".to_owned()).and_then(|result| result.map_err(|e| e.to_string()))
        {
            tracing::error!(%error, products = ids.len(), "cannot invalidate cached products; they may be stale until their TTL");
        }
    }
}
