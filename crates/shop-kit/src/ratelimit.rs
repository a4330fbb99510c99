//! Request rate limits that every replica agrees on: GCRA (the generic cell rate algorithm,
//! one timestamp per key) evaluated atomically in Redis with Redis's own clock, so two
//! replicas behind one Service count one client once. If Redis cannot answer, each replica
//! falls back to the same limit kept in its own memory (governor), so an outage of Redis
//! neither opens the gate nor locks everyone out: with N replicas a client gets at most N
//! times its allowance until Redis is back.
//!
//! A limit is written `<count>/<period>` (`10/1h`, `60/1m`): up to `count` requests at once,
//! then one more every `period / count`. A refusal says when the next request would pass,
//! which is the `Retry-After` of the 429.

use std::{
    num::NonZeroU32,
    str::FromStr,
    sync::{Arc, LazyLock},
    time::Duration,
};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
};
use redis::aio::ConnectionManager;

use crate::{
    cache::{Breaker, KeyPrefix, Unavailable},
    config::{HumanDuration, Vars},
};

/// `count` requests per `period`, as a burst of `count` refilling evenly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub period: Duration,
}

impl Rate {
    /// The time one request's allowance takes to come back.
    pub fn interval(&self) -> Duration {
        self.period / self.count.get()
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} per {:?}", self.count, self.period)
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (count, period) = text.split_once('/').ok_or("expected <count>/<period>, e.g. 10/1m")?;
        let count: u32 = count.trim().parse().map_err(|_| "the count must be a whole number")?;
        let count = NonZeroU32::new(count).ok_or("the count must be at least 1")?;
        let HumanDuration(period) = period.parse()?;
        if period < Duration::from_secs(1) {
            return Err("the period must be at least 1s".to_owned());
        }
        if period / count.get() < Duration::from_millis(1) {
            return Err("more than one request per millisecond is not a limit".to_owned());
        }
        Ok(Self { count, period })
    }
}

/// The rate in `name` (`<count>/<period>`), or `default`, written the same way.
pub fn rate(vars: &Vars, name: &str, default: &str) -> anyhow::Result<Rate> {
    let default = default.parse().map_err(|reason: String| anyhow::anyhow!("the default of {name}: {reason}"))?;
    Ok(vars.or(name, default)?)
}

/// Whether a request may go ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Limited { retry_after: Duration },
}

impl Decision {
    /// Whole seconds to wait, at least 1 (the unit of `Retry-After`).
    pub fn retry_after_secs(retry_after: Duration) -> u32 {
        let millis = retry_after.as_millis().max(1);
        u32::try_from(millis.div_ceil(1000)).unwrap_or(u32::MAX)
    }
}

/// One GCRA step in Redis. KEYS[1]: the key; ARGV[1]: the interval in ms; ARGV[2]: the burst.
/// Stores the theoretical arrival time (ms since the epoch, Redis's clock) and expires it when
/// the key is back to a full burst. Returns 0 to allow, else the ms until it would.
static GCRA: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local allow_at = next_tat - interval * tonumber(ARGV[2])
if now < allow_at then return allow_at - now end
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.max(1, next_tat - now))
return 0
",
    )
});

/// Counts a 429 of the limit `name` in `rate_limited_total`.
pub fn count_refusal(name: &'static str) {
    metrics::counter!("rate_limited_total", "limit" => name).increment(1);
}

/// The shared part: Redis, the key prefix, and the breaker that skips Redis after a failure.
#[derive(Clone)]
pub struct Limits {
    redis: ConnectionManager,
    prefix: KeyPrefix,
    breaker: Arc<Breaker>,
}

impl Limits {
    /// `deadline` bounds each Redis call; after a failure Redis is skipped for 5 s.
    pub fn new(redis: ConnectionManager, prefix: KeyPrefix, deadline: Duration) -> Self {
        Self { redis, prefix, breaker: Arc::new(Breaker::new(deadline, Duration::from_secs(5))) }
    }

    /// A named limit (`register`, `checkout`, ...): the name is part of its Redis keys and of
    /// the `rate_limited_total` metric.
    pub fn limit(&self, name: &'static str, rate: Rate) -> Limit {
        let quota = Quota::with_period(rate.interval())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(rate.count);
        Limit { name, rate, shared: self.clone(), local: Arc::new(RateLimiter::keyed(quota)) }
    }
}

/// One limit, applied per key (a client address, an account).
#[derive(Clone)]
pub struct Limit {
    name: &'static str,
    rate: Rate,
    shared: Limits,
    local: Arc<DefaultKeyedRateLimiter<String>>,
}

impl Limit {
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Counts one request for `key` and says whether it may go ahead.
    pub async fn check(&self, key: &str) -> Decision {
        let redis_key = self.shared.prefix.key(&["ratelimit", self.name, key]);
        let interval = u64::try_from(self.rate.interval().as_millis()).unwrap_or(u64::MAX);
        let mut redis = self.shared.redis.clone();
        let mut invocation = GCRA.key(&redis_key);
        invocation.arg(interval).arg(self.rate.count.get());
        let decision = match self.shared.breaker.call(invocation.invoke_async::<u64>(&mut redis)).await {
            Ok(0) => Decision::Allowed,
            Ok(wait_ms) => Decision::Limited { retry_after: Duration::from_millis(wait_ms) },
            Err(error) => {
                match &error {
                    Unavailable::CoolingDown => {}
                    _ => {
                        tracing::error!(%error, limit = self.name, "rate limits unavailable in Redis; this replica limits on its own")
                    }
                }
                self.check_locally(key)
            }
        };
        if let Decision::Limited { .. } = decision {
            count_refusal(self.name);
        }
        decision
    }

    fn check_locally(&self, key: &str) -> Decision {
        // Forget keys whose allowance is full again, so the map stays as small as the set of
        // clients currently being limited.
        if self.local.len() > 10_000 {
            self.local.retain_recent();
        }
        match self.local.check_key(&key.to_owned()) {
            Ok(()) => Decision::Allowed,
            Err(not_until) => {
                Decision::Limited { retry_after: not_until.wait_time_from(DefaultClock::default().now()) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_parsed_with_their_units() {
        let rate: Rate = "10/1h".parse().unwrap();
        assert_eq!((rate.count.get(), rate.period), (10, Duration::from_secs(3600)));
        assert_eq!(rate.interval(), Duration::from_secs(360));
        for (text, why) in [
            ("10", "<count>/<period>"),
            ("0/1m", "at least 1"),
            ("x/1m", "whole number"),
            ("10/1", "unit"),
            ("10/500ms", "at least 1s"),
            ("5000/1s", "per millisecond"),
        ] {
            let error = text.parse::<Rate>().unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(Decision::retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(Decision::retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(Decision::retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(Decision::retry_after_secs(Duration::ZERO), 1);
    }
}
