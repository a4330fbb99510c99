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
//! is left of the longest one reached. Each attempt counts as a failure before the password is
//! checked, in one atomic step with the check of the limits (a success takes it back), so
//! attempts sent in parallel cannot all pass one count. A success clears that client's failures
//! on the account, never the
//! account-wide count (else an attacker who knows one password could reset it). The client
//! address is `ClientIp`, which behind an ingress needs `TRUSTED_PROXY_HOPS`.
//!
//! If Redis is unreachable the limiter lets logins through (and says so in the log) rather than
//! lock every user out; the per-client `RATE_LIMIT_LOGIN` still holds, on each replica.

use std::{
    net::IpAddr,
    sync::{Arc, LazyLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redis::aio::ConnectionManager;
use shop_kit::{
    cache::{Breaker, KeyPrefix, Unavailable},
    client_ip::limit_key,
};

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

/// KEYS: pair, client, account, known. ARGV: the three limits, the window (ms), the client,
/// now (ms), the known-client TTL (ms). Refuses with the longest wait among the limits reached
/// (ms, and which), else counts the attempt against all three (a window starts with its first
/// failure; a key left without expiry gets one) and returns 0.
static ATTEMPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])}
local names = {'pair', 'client', 'account'}
local since = redis.call('ZSCORE', KEYS[4], ARGV[5])
local known = since and (tonumber(ARGV[6]) - tonumber(since) < tonumber(ARGV[7]))
local wait, which = 0, ''
for i = 1, 3 do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  if count >= limits[i] and not (i == 3 and known) then
    local left = redis.call('PTTL', KEYS[i])
    if left < 1 then left = tonumber(ARGV[4]) end
    if left > wait then wait, which = left, names[i] end
  end
end
if wait > 0 then return {wait, which} end
for i = 1, 3 do
  redis.call('INCR', KEYS[i])
  if redis.call('PTTL', KEYS[i]) < 0 then redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
end
return {0, ''}
",
    )
});

/// KEYS as [`ATTEMPT`]. ARGV: the client, now (ms), the known-client TTL (ms), how many
/// clients to remember. Takes the attempt back (never below zero, never on a key that expired
/// meanwhile), clears the pair and records the client.
static SUCCEEDED: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('DEL', KEYS[1])
for i = 2, 3 do
  if tonumber(redis.call('GET', KEYS[i]) or '0') > 0 then redis.call('DECR', KEYS[i]) end
end
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -(tonumber(ARGV[4]) + 1))
redis.call('PEXPIRE', KEYS[4], ARGV[3])
return 0
",
    )
});

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
        let ip = limit_key(ip);
        Keys {
            pair: self.prefix.key(&["login-failures", "pair", email, &ip]),
            client: self.prefix.key(&["login-failures", "client", &ip]),
            account: self.prefix.key(&["login-failures", "account", email]),
            known: self.prefix.key(&["login-known", email]),
        }
    }

    /// Whether `email` may be tried from `ip` now; if so, the attempt is counted as a failure
    /// at once (taken back by [`Self::record_success`]), in one atomic step. Counting only after
    /// the password check would let attempts sent in parallel all pass a count that none of
    /// them had raised yet.
    pub async fn attempt(&self, email: &str, ip: IpAddr) -> Verdict {
        let keys = self.keys(email, ip);
        let mut redis = self.redis.clone();
        let mut invocation = ATTEMPT.key(&keys.pair);
        invocation
            .key(&keys.client)
            .key(&keys.account)
            .key(&keys.known)
            .arg(self.limits.per_account_and_client)
            .arg(self.limits.per_client)
            .arg(self.limits.per_account)
            .arg(millis(self.limits.window))
            .arg(limit_key(ip))
            .arg(now_millis())
            .arg(millis(self.limits.known_client_ttl));
        match self.breaker.call(invocation.invoke_async::<(i64, String)>(&mut redis)).await {
            Ok((0, _)) => Verdict::Allowed,
            Ok((wait_ms, limit)) => {
                shop_kit::ratelimit::count_refusal(match limit.as_str() {
                    "pair" => "login_failures_account_and_client",
                    "client" => "login_failures_client",
                    _ => "login_failures_account",
                });
                let seconds = (wait_ms.max(1) + 999) / 1000;
                Verdict::Limited { retry_after_secs: u32::try_from(seconds).unwrap_or(u32::MAX) }
            }
            Err(error) => {
                report(&error, "login limiter unavailable; allowing the attempt");
                Verdict::Allowed
            }
        }
    }

    /// After a successful login: takes the attempt back from the counts, clears this client's
    /// failures on the account and remembers the client as one the account logs in from.
    pub async fn record_success(&self, email: &str, ip: IpAddr) {
        let keys = self.keys(email, ip);
        let mut redis = self.redis.clone();
        let mut invocation = SUCCEEDED.key(&keys.pair);
        invocation
            .key(&keys.client)
            .key(&keys.account)
            .key(&keys.known)
            .arg(limit_key(ip))
            .arg(now_millis())
            .arg(millis(self.limits.known_client_ttl))
            .arg(KNOWN_CLIENTS);
        if let Err(error) = self.breaker.call(invocation.invoke_async::<()>(&mut redis)).await {
            report(&error, "cannot record a successful login");
        }
    }
}
