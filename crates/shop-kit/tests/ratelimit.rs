//! Rate limits against the real Redis: replicas share one count, refusals say when to come
//! back, and a Redis outage falls back to a limit per replica rather than none.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly on purpose")]

use std::time::Duration;

use secrecy::SecretString;
use shop_kit::{
    cache::{self, KeyPrefix, RedisConfig},
    ratelimit::{Decision, Limits},
};
use shop_testkit::{TcpProxy, TestRedis};

async fn limits(url: String, prefix: &str) -> Limits {
    let config = RedisConfig {
        url: SecretString::from(url),
        key_prefix: KeyPrefix::new(prefix),
        timeout: Duration::from_millis(300),
        ca: None,
    };
    Limits::new(cache::connect(&config).await.unwrap(), KeyPrefix::new(prefix), config.timeout)
}

fn retry_after(decision: Decision) -> Duration {
    match decision {
        Decision::Limited { retry_after } => retry_after,
        Decision::Allowed => panic!("expected a refusal"),
    }
}

#[tokio::test]
async fn two_replicas_share_one_count_and_a_refusal_says_when_to_return() {
    let redis = TestRedis::new();
    let rate = "3/1m".parse().unwrap();
    let a = limits(redis.url(), redis.prefix()).await.limit("register", rate);
    let b = limits(redis.url(), redis.prefix()).await.limit("register", rate);
    assert_eq!(a.check("10.0.0.1").await, Decision::Allowed);
    assert_eq!(b.check("10.0.0.1").await, Decision::Allowed);
    assert_eq!(a.check("10.0.0.1").await, Decision::Allowed);
    // The burst of 3 is spent across both replicas; the next allowance is one interval (20 s) away.
    let wait = retry_after(b.check("10.0.0.1").await);
    assert!(wait > Duration::from_secs(18) && wait <= Duration::from_secs(20), "{wait:?}");
    assert!(retry_after(a.check("10.0.0.1").await) > Duration::from_secs(18));
    // Another client, and another limit for the same client, are counted apart.
    assert_eq!(a.check("10.0.0.2").await, Decision::Allowed);
    let other = limits(redis.url(), redis.prefix()).await.limit("refresh", rate);
    assert_eq!(other.check("10.0.0.1").await, Decision::Allowed);

    // Redis forgets the key once the allowance is full again: no key outlives its period.
    let mut connection = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{}ratelimit:register:10.0.0.1", redis.prefix()))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
}

#[tokio::test]
async fn an_allowance_comes_back_after_its_interval() {
    let redis = TestRedis::new();
    let limit = limits(redis.url(), redis.prefix()).await.limit("refresh", "2/2s".parse().unwrap());
    assert_eq!(limit.check("k").await, Decision::Allowed);
    assert_eq!(limit.check("k").await, Decision::Allowed);
    let wait = retry_after(limit.check("k").await);
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    assert_eq!(limit.check("k").await, Decision::Allowed, "one allowance is back after {wait:?}");
    assert!(matches!(limit.check("k").await, Decision::Limited { .. }), "and only one");
}

#[tokio::test]
async fn without_redis_each_replica_limits_on_its_own() {
    let redis = TestRedis::new();
    let proxy = TcpProxy::start("127.0.0.1:6379").await;
    let limit =
        limits(format!("redis://{}", proxy.address()), redis.prefix()).await.limit("login", "3/1m".parse().unwrap());
    assert_eq!(limit.check("10.0.0.1").await, Decision::Allowed);
    proxy.cut();
    // The Redis count is lost with Redis; the local one starts from a full burst.
    for attempt in 0..3 {
        assert_eq!(limit.check("10.0.0.1").await, Decision::Allowed, "attempt {attempt}");
    }
    let wait = retry_after(limit.check("10.0.0.1").await);
    assert!(wait > Duration::from_secs(18) && wait <= Duration::from_secs(20), "{wait:?}");
    assert_eq!(limit.check("10.0.0.2").await, Decision::Allowed, "other clients go on");
}
