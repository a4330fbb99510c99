//! The JWKS client the services other than the user service verify tokens with.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use jsonwebtoken::DecodingKey;

use super::{Jwks, decoding_keys, unknown_key};
use crate::error::Problem;

/// A client of the user service's JWKS, with a cache that never makes a token check wait for a
/// key it already has:
///
/// - a known key is answered from the cache; once the cache is older than its TTL, one
///   background fetch revalidates it while every check goes on with the stale set (so a down
///   user service costs nothing until a key is actually unknown);
/// - an unknown key id (a rotation, or a made-up token) triggers a fetch that all concurrent
///   checks share (single flight), and at most one fetch per [`MIN_REFRESH`]: a flood of tokens
///   with random key ids costs one fetch every few seconds, not one each.
#[derive(Clone)]
pub struct JwksClient {
    inner: Arc<JwksInner>,
}

/// The least time between two JWKS fetches.
pub const MIN_REFRESH: Duration = Duration::from_secs(5);

struct JwksInner {
    url: String,
    http: reqwest::Client,
    ttl: Duration,
    cache: RwLock<JwksCache>,
    /// Held by the one fetch in flight.
    refreshing: tokio::sync::Mutex<()>,
    /// Whether a background revalidation is running.
    revalidating: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct JwksCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
    /// Whether the last attempt failed (an unknown key is then 503, not 401).
    failing: bool,
}

impl JwksClient {
    pub fn new(url: &str, ttl: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .context("cannot build the JWKS HTTP client")?;
        Ok(Self {
            inner: Arc::new(JwksInner {
                url: url.to_owned(),
                http,
                ttl,
                cache: RwLock::new(JwksCache::default()),
                refreshing: tokio::sync::Mutex::new(()),
                revalidating: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The key with this id.
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, Problem> {
        let (cached, fresh, may_fetch) = self.lookup(kid);
        if let Some(key) = cached {
            if !fresh && may_fetch {
                self.revalidate_in_background();
            }
            return Ok(key);
        }
        if !may_fetch {
            return Err(self.missing());
        }
        let _one_fetch = self.inner.refreshing.lock().await;
        // The fetch another check made while this one waited may have brought the key.
        let (after_wait, _, may_fetch) = self.lookup(kid);
        if let Some(key) = after_wait {
            return Ok(key);
        }
        if !may_fetch {
            return Err(self.missing());
        }
        self.fetch_and_store().await;
        self.lookup(kid).0.ok_or_else(|| self.missing())
    }

    /// Why a key is not there: unknown to a JWKS we could read (401), or the JWKS could not be
    /// read (503, retry).
    fn missing(&self) -> Problem {
        if self.inner.cache.read().unwrap_or_else(std::sync::PoisonError::into_inner).failing {
            Problem::unavailable("auth_unavailable", "token keys are unavailable; retry shortly")
        } else {
            unknown_key()
        }
    }

    fn revalidate_in_background(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.revalidating.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Clears the flag however the task ends (a panic or a dropped runtime included), so
        /// revalidation can never stay switched off.
        struct Clear(Arc<JwksInner>);
        impl Drop for Clear {
            fn drop(&mut self) {
                self.0.revalidating.store(false, std::sync::atomic::Ordering::Release);
            }
        }
        let client = self.clone();
        let clear = Clear(Arc::clone(&self.inner));
        tokio::spawn(async move {
            let _clear = clear;
            let _one_fetch = client.inner.refreshing.lock().await;
            if client.lookup("").2 {
                client.fetch_and_store().await;
            }
        });
    }

    /// (the key if cached, whether the cache is fresh, whether a fetch is allowed now)
    fn lookup(&self, kid: &str) -> (Option<DecodingKey>, bool, bool) {
        let cache = self.inner.cache.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = cache.keys.get(kid).cloned();
        let fresh = cache.fetched_at.is_some_and(|at| at.elapsed() < self.inner.ttl);
        let may_fetch = cache.attempted_at.is_none_or(|at| at.elapsed() >= MIN_REFRESH);
        (key, fresh, may_fetch)
    }

    async fn fetch_and_store(&self) {
        let outcome = self.fetch().await;
        let mut cache = self.inner.cache.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        cache.attempted_at = Some(now);
        match outcome {
            Ok(keys) => {
                cache.keys = keys;
                cache.fetched_at = Some(now);
                cache.failing = false;
            }
            Err(error) => {
                cache.failing = true;
                tracing::warn!(jwks.url = %self.inner.url, error = format!("{error:#}"), "cannot refresh the JWKS; using the keys cached");
            }
        }
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, DecodingKey>> {
        let mut request = self.inner.http.get(&self.inner.url).build().context("bad JWKS URL")?;
        crate::telemetry::inject_current(request.headers_mut());
        let response = self.inner.http.execute(request).await.context("JWKS request failed")?;
        let jwks: Jwks = response.error_for_status().context("JWKS answered an error")?.json().await?;
        let keys = decoding_keys(&jwks);
        tracing::info!(jwks.url = %self.inner.url, keys = keys.len(), "fetched the JWKS");
        Ok(keys)
    }
}
