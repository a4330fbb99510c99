//! `OrderPlaced` empties the ordered lines from the buyer's cart, exactly once: one Lua
//! script records the event id (`SET NX` with a week's expiry) and removes the lines, so a
//! redelivered event cannot remove lines the buyer has added since. A line set after the
//! order was placed stays too, however late the event comes (after a broker outage, say):
//! the event id is a UUIDv7 minted when the order was stored, so it carries the placement
//! time, and each line carries when it was set (`set_at_ms`).

use futures::future::BoxFuture;
use redis::{Script, aio::ConnectionManager};
use shop_kit::{
    cache::KeyPrefix,
    events::{ApplyError, ApplyOnce, Outcome, Received},
};
use shop_proto::shop::events::v1::{OrderCancelled, OrderConfirmed, OrderDelivered, OrderPlaced, OrderShipped};

shop_kit::consumes! {
    /// The order event that empties carts.
    pub enum OrderEvent {
        Placed(OrderPlaced),
    }
    ignoring [OrderConfirmed, OrderCancelled, OrderShipped, OrderDelivered]
}

/// KEYS[1] inbox key, KEYS[2] cart; ARGV: inbox ttl, placed at (Unix ms), product ids...
/// A line set after the order was placed (or one that cannot be read) is kept.
const CLEAR_ONCE: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
local placed_at = tonumber(ARGV[2])
for i = 3, #ARGV do
  local json = redis.call('HGET', KEYS[2], ARGV[i])
  if json then
    local ok, line = pcall(cjson.decode, json)
    if ok and type(line) == 'table' and (tonumber(line['set_at_ms']) or 0) <= placed_at then
      redis.call('HDEL', KEYS[2], ARGV[i])
    end
  end
end
if redis.call('HLEN', KEYS[2]) <= 1 then
  redis.call('DEL', KEYS[2])
end
return 1";

pub struct OrderEvents {
    redis: ConnectionManager,
    prefix: KeyPrefix,
    script: Script,
}

impl OrderEvents {
    pub fn new(redis: ConnectionManager, prefix: KeyPrefix) -> Self {
        Self { redis, prefix, script: Script::new(CLEAR_ONCE) }
    }
}

/// When the event was minted, from its UUIDv7 id (Unix ms); an id of another version counts
/// as minted now, so every ordered line goes.
fn placed_at_ms(id: uuid::Uuid) -> i64 {
    let now = || chrono::Utc::now().timestamp_millis();
    match id.get_timestamp() {
        Some(timestamp) => {
            let (seconds, nanos) = timestamp.to_unix();
            i64::try_from(seconds).map_or_else(|_| now(), |seconds| seconds * 1000 + i64::from(nanos / 1_000_000))
        }
        None => now(),
    }
}

impl ApplyOnce for OrderEvents {
    type Event = OrderEvent;

    fn apply<'a>(
        &'a self,
        consumer: &'a str,
        event: &'a Received<OrderEvent>,
    ) -> BoxFuture<'a, Result<Outcome, ApplyError>> {
        Box::pin(async move {
            let OrderEvent::Placed(placed) = &event.message;
            let inbox = self.prefix.key(&["inbox", consumer, &event.ce_id.to_string()]);
            let cart = self.prefix.key(&["cart", &placed.user_id]);
            let mut invocation = self.script.key(inbox);
            invocation.key(cart).arg(7 * 86_400).arg(placed_at_ms(event.ce_id));
            for line in &placed.lines {
                invocation.arg(&line.product_id);
            }
            let mut redis = self.redis.clone();
            let fresh: i32 =
                invocation.invoke_async(&mut redis).await.map_err(|error| ApplyError::Infrastructure(error.into()))?;
            Ok(if fresh == 1 { Outcome::Applied } else { Outcome::Duplicate })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placement_time_comes_from_the_uuidv7_id() {
        let before = chrono::Utc::now().timestamp_millis();
        let placed = placed_at_ms(uuid::Uuid::now_v7());
        let after = chrono::Utc::now().timestamp_millis();
        assert!(before <= placed && placed <= after, "{before} {placed} {after}");
        let v4 = placed_at_ms(uuid::Uuid::from_u128(0x1234_5678_9abc_4def_8123_4567_89ab_cdef));
        assert!(v4 >= after, "an id without a time counts as now");
    }
}
