//! The Redis layout: one hash per cart, `<prefix>cart:<user id>`, a field per product id
//! holding the JSON [`Line`], and a `_currency` field. Writes are Lua scripts, atomic in
//! Redis, and each one renews the cart's idle expiry.

use std::time::Duration;

use redis::{Script, aio::ConnectionManager};
use shop_kit::cache::KeyPrefix;
use uuid::Uuid;

use crate::{domain::Line, error::Error};

const CURRENCY_FIELD: &str = "_currency";

/// KEYS[1] cart; ARGV: field, line JSON, currency, max lines, ttl seconds.
const SET_LINE: &str = r"
local cart = KEYS[1]
local currency = redis.call('HGET', cart, '_currency')
local lines = redis.call('HLEN', cart) - (currency and 1 or 0)
local present = redis.call('HEXISTS', cart, ARGV[1]) == 1
if currency and currency ~= ARGV[3] and not (present and lines == 1) then
  return {'currency_mismatch', currency}
end
if not present and lines >= tonumber(ARGV[4]) then
  return {'cart_full', ''}
end
redis.call('HSET', cart, ARGV[1], ARGV[2], '_currency', ARGV[3])
redis.call('EXPIRE', cart, ARGV[5])
return {'ok', ''}";

/// KEYS[1] cart; ARGV: field, ttl seconds. Returns 1 if the line was there.
const REMOVE_LINE: &str = r"
local cart = KEYS[1]
local removed = redis.call('HDEL', cart, ARGV[1])
if redis.call('HLEN', cart) <= 1 then
  redis.call('DEL', cart)
else
  redis.call('EXPIRE', cart, ARGV[2])
end
return removed";

/// What setting a line led to.
pub enum SetOutcome {
    Set,
    CurrencyMismatch { cart: String },
    Full,
}

#[derive(Clone)]
pub struct CartStore {
    redis: ConnectionManager,
    prefix: KeyPrefix,
    idle_ttl: Duration,
    max_lines: u32,
    set_line: Script,
    remove_line: Script,
}

impl CartStore {
    pub fn new(redis: ConnectionManager, prefix: KeyPrefix, idle_ttl: Duration, max_lines: u32) -> Self {
        Self {
            redis,
            prefix,
            idle_ttl,
            max_lines,
            set_line: Script::new(SET_LINE),
            remove_line: Script::new(REMOVE_LINE),
        }
    }

    pub fn max_lines(&self) -> u32 {
        self.max_lines
    }

    fn key(&self, user_id: Uuid) -> String {
        self.prefix.key(&["cart", &user_id.to_string()])
    }

    /// The lines of a user's cart (empty when there is none); renews its idle expiry.
    pub async fn lines(&self, user_id: Uuid) -> Result<Vec<Line>, Error> {
        let key = self.key(user_id);
        let mut redis = self.redis.clone();
        let (fields, _): (Vec<(String, String)>, i64) = redis::pipe()
            .hgetall(&key)
            .expire(&key, i64::try_from(self.ttl_secs()).unwrap_or(i64::MAX))
            .query_async(&mut redis)
            .await?;
        let mut lines = Vec::with_capacity(fields.len());
        for (field, json) in fields.into_iter().filter(|(field, _)| field != CURRENCY_FIELD) {
            match serde_json::from_str::<Line>(&json) {
                Ok(line) => lines.push(line),
                Err(error) => tracing::warn!(%error, cart.field = %field, "skipping an unreadable cart line"),
            }
        }
        Ok(lines)
    }

    pub async fn set(&self, user_id: Uuid, line: &Line) -> Result<SetOutcome, Error> {
        let json = serde_json::to_string(line).map_err(|error| Error::Internal(error.into()))?;
        let mut redis = self.redis.clone();
        let (outcome, detail): (String, String) = self
            .set_line
            .key(self.key(user_id))
            .arg(line.product_id.to_string())
            .arg(json)
            .arg(&line.unit_price.currency)
            .arg(self.max_lines)
            .arg(self.ttl_secs())
            .invoke_async(&mut redis)
            .await?;
        Ok(match outcome.as_str() {
            "currency_mismatch" => SetOutcome::CurrencyMismatch { cart: detail },
            "cart_full" => SetOutcome::Full,
            _ => SetOutcome::Set,
        })
    }

    /// Removes a line; whether it was there.
    pub async fn remove(&self, user_id: Uuid, product_id: Uuid) -> Result<bool, Error> {
        let mut redis = self.redis.clone();
        let removed: i64 = self
            .remove_line
            .key(self.key(user_id))
            .arg(product_id.to_string())
            .arg(self.ttl_secs())
            .invoke_async(&mut redis)
            .await?;
        Ok(removed == 1)
    }

    pub async fn clear(&self, user_id: Uuid) -> Result<(), Error> {
        let mut redis = self.redis.clone();
        redis::cmd("DEL").arg(self.key(user_id)).query_async::<()>(&mut redis).await?;
        Ok(())
    }

    fn ttl_secs(&self) -> u64 {
        self.idle_ttl.as_secs().max(1)
    }
}
