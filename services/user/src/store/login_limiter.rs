//! Limits on FAILED logins, in Redis: a tight one per account (guessing one password) and
//! a generous one per client address (spraying many accounts), so that a load test from one
//! address that logs in correctly is never limited. Fixed windows: the first failure starts
//! the window, `Retry-After` is what is left of it.
//!
//! If Redis is unreachable the limiter lets logins through (and says so in the log): an
//! outage of the limiter must not lock every user out.

use std::net::IpAddr;

use std::{sync::Arc, time::Duration};

use redis::aio::ConnectionManager;
use shop_kit::cache::{Breaker, KeyPrefix, Unavailable};

use crate::config::LoginLimits;

/// Whether a login may be attempted.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Limited { retry_after_secs: u32 },
}

#[derive(Clone)]
pub struct LoginLimiter {
    redis: ConnectionManager,
    prefix: KeyPrefix,
    limits: LoginLimits,
    breaker: Arc<Breaker>,
}

/// Logs a limiter outage once per cool-down, not once per login.
fn report(error: &Unavailable, what: &str) {
    match error {
        Unavailable::CoolingDown => tracing::debug!(%error, "{what}"),
        _ => tracing::error!(%error, "{what}"),
    }
}

impl LoginLimiter {
    /// `deadline` bounds each Redis call; after a failure Redis is skipped for 5 s.
    pub fn new(redis: ConnectionManager, prefix: KeyPrefix, limits: LoginLimits, deadline: Duration) -> Self {
        Self { redis, prefix, limits, breaker: Arc::new(Breaker::new(deadline, Duration::from_secs(5))) }
    }

    fn keys(&self, email: &str, ip: IpAddr) -> (String, String) {
        (
            self.prefix.key(&["login-failures", "account", email]),
            self.prefix.key(&["login-failures", "ip", &ip.to_string()]),
        )
    }

    /// Whether `email` from `ip` may try now.
    pub async fn check(&self, email: &str, ip: IpAddr) -> Verdict {
        let (account_key, ip_key) = self.keys(email, ip);
        let mut redis = self.redis.clone();
        let answer: Result<(Option<u32>, i64, Option<u32>, i64), _> =
            redis::pipe().get(&account_key).ttl(&account_key).get(&ip_key).ttl(&ip_key).query_async(&mut redis).await;
        let (account, account_ttl, per_ip, ip_ttl) = match answer {
            Ok(answer) => answer,
            Err(error) => {
                tracing::error!(%error, "login limiter unavailable; allowing the attempt");
                return Verdict::Allowed;
            }
        };
        let window = u32::try_from(self.limits.window.as_secs()).unwrap_or(u32::MAX);
        let remaining = |ttl: i64| u32::try_from(ttl).unwrap_or(window).max(1);
        if account.unwrap_or(0) >= self.limits.per_account {
            return Verdict::Limited { retry_after_secs: remaining(account_ttl) };
        }
        if per_ip.unwrap_or(0) >= self.limits.per_ip {
            return Verdict::Limited { retry_after_secs: remaining(ip_ttl) };
        }
        Verdict::Allowed
    }

    /// Counts a failed attempt against both limits.
    pub async fn record_failure(&self, email: &str, ip: IpAddr) {
        let (account_key, ip_key) = self.keys(email, ip);
        let window = i64::try_from(self.limits.window.as_secs()).unwrap_or(i64::MAX).max(1);
        let mut redis = self.redis.clone();
        let mut pipe = redis::pipe();
        pipe.incr(&account_key, 1)
            .ignore()
            .cmd("EXPIRE")
            .arg(&account_key)
            .arg(window)
            .arg("NX")
            .ignore()
            .incr(&ip_key, 1)
            .ignore()
            .cmd("EXPIRE")
            .arg(&ip_key)
            .arg(window)
            .arg("NX")
            .ignore();
        if let Err(error) = self.breaker.call(pipe.query_async::<()>(&mut redis)).await {
            report(&error, "login limiter unavailable; a failed login was not counted");
        }
    }

    /// Clears the account's failures after a successful login.
    pub async fn record_success(&self, email: &str, ip: IpAddr) {
        let (account_key, _) = self.keys(email, ip);
        let mut redis = self.redis.clone();
        let mut delete = redis::cmd("DEL");
        delete.arg(&account_key);
        if let Err(error) = self.breaker.call(delete.query_async::<()>(&mut redis)).await {
            report(&error, "cannot clear login failures");
        }
    }
}
