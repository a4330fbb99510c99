//! Limits on FAILED logins, in Redis, shaped so that an attacker is slowed and the owner is
//! not locked out:
//!
//! - per account and client address (`LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_CLIENT`, 5): guessing
//!   one password from one place. Only that client waits: the owner, elsewhere, logs in.
//! - per client address (`LOGIN_MAX_FAILURES_PER_CLIENT`, 100): one place trying many
//!   accounts.
//! - per account from everywhere (`LOGIN_MAX_FAILURES_PER_ACCOUNT`, 50): guessing spread over
//!   many addresses. Past it, only the addresses the account has logged in from lately (kept
//!   `LOGIN_KNOWN_CLIENT_TTL`, the newest [`KNOWN_CLIENTS`]) may still try, so a botnet cannot
//!   keep the owner out either.
//!
//! Fixed windows (`LOGIN_FAILURE_WINDOW`): the first failure starts one, `Retry-After` is what
//! is left of it. A success clears that client's failures on the account, never the
//! account-wide count (else an attacker who knows one password could reset it). The client
//! address is `ClientIp`, which behind an ingress needs `TRUSTED_PROXY_HOPS`.
//!
//! If Redis is unreachable the limiter lets logins through (and says so in the log) rather than
//! lock every user out; the per-client `RATE_LIMIT_LOGIN` still holds, on each replica.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redis::aio::ConnectionManager;
use shop_kit::cache::{Breaker, KeyPrefix, Unavailable};

use crate::config::LoginLimits;

/// How many recent client addresses an account remembers.
const KNOWN_CLIENTS: isize = 20;

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

struct Keys {
    pair: String,
    client: String,
    account: String,
    known: String,
}

fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX).max(1)
}

impl LoginLimiter {
    /// `deadline` bounds each Redis call; after a failure Redis is skipped for 5 s.
    pub fn new(redis: ConnectionManager, prefix: KeyPrefix, limits: LoginLimits, deadline: Duration) -> Self {
        Self { redis, prefix, limits, breaker: Arc::new(Breaker::new(deadline, Duration::from_secs(5))) }
    }

    fn keys(&self, email: &str, ip: IpAddr) -> Keys {
        let ip = ip.to_string();
        Keys {
            pair: self.prefix.key(&["login-failures", "pair", email, &ip]),
            client: self.prefix.key(&["login-failures", "client", &ip]),
            account: self.prefix.key(&["login-failures", "account", email]),
            known: self.prefix.key(&["login-known", email]),
        }
    }

    /// Whether `email` may be tried from `ip` now.
    pub async fn check(&self, email: &str, ip: IpAddr) -> Verdict {
        let keys = self.keys(email, ip);
        let mut redis = self.redis.clone();
        let mut pipe = redis::pipe();
        pipe.get(&keys.pair)
            .pttl(&keys.pair)
            .get(&keys.client)
            .pttl(&keys.client)
            .get(&keys.account)
            .pttl(&keys.account)
            .zscore(&keys.known, ip.to_string());
        type Answer = (Option<u32>, i64, Option<u32>, i64, Option<u32>, i64, Option<i64>);
        let (pair, pair_ttl, client, client_ttl, account, account_ttl, known_since) =
            match self.breaker.call(pipe.query_async::<Answer>(&mut redis)).await {
                Ok(answer) => answer,
                Err(error) => {
                    report(&error, "login limiter unavailable; allowing the attempt");
                    return Verdict::Allowed;
                }
            };
        let window = u32::try_from(self.limits.window.as_secs()).unwrap_or(u32::MAX);
        let limited = |ttl_ms: i64| Verdict::Limited {
            retry_after_secs: u32::try_from((ttl_ms.max(1) + 999) / 1000).unwrap_or(window).max(1),
        };
        if pair.unwrap_or(0) >= self.limits.per_account_and_client {
            return limited(pair_ttl);
        }
        if client.unwrap_or(0) >= self.limits.per_client {
            return limited(client_ttl);
        }
        let known = known_since.is_some_and(|since| now_millis() - since < millis(self.limits.known_client_ttl));
        if account.unwrap_or(0) >= self.limits.per_account && !known {
            return limited(account_ttl);
        }
        Verdict::Allowed
    }

    /// Counts a failed attempt against the three limits.
    pub async fn record_failure(&self, email: &str, ip: IpAddr) {
        let keys = self.keys(email, ip);
        let window = millis(self.limits.window);
        let mut redis = self.redis.clone();
        let mut pipe = redis::pipe();
        for key in [&keys.pair, &keys.client, &keys.account] {
            pipe.incr(key, 1).ignore().cmd("PEXPIRE").arg(key).arg(window).arg("NX").ignore();
        }
        if let Err(error) = self.breaker.call(pipe.query_async::<()>(&mut redis)).await {
            report(&error, "login limiter unavailable; a failed login was not counted");
        }
    }

    /// After a successful login: clears this client's failures on the account and remembers
    /// the client as one the account logs in from.
    pub async fn record_success(&self, email: &str, ip: IpAddr) {
        let keys = self.keys(email, ip);
        let now = now_millis();
        let ttl = millis(self.limits.known_client_ttl);
        let mut redis = self.redis.clone();
        let mut pipe = redis::pipe();
        pipe.del(&keys.pair)
            .ignore()
            .zadd(&keys.known, ip.to_string(), now)
            .ignore()
            .zrembyscore(&keys.known, "-inf", now.saturating_sub(ttl))
            .ignore()
            .zremrangebyrank(&keys.known, 0, -(KNOWN_CLIENTS + 1))
            .ignore()
            .pexpire(&keys.known, ttl)
            .ignore();
        if let Err(error) = self.breaker.call(pipe.query_async::<()>(&mut redis)).await {
            report(&error, "cannot record a successful login");
        }
    }
}
