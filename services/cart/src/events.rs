//! `OrderPlaced` empties the ordered lines from the buyer's cart, exactly once: one Lua
//! script records the event id (`SET NX` with a week's expiry) and removes the lines, so a
//! redelivered event cannot remove lines the buyer has added since.

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

/// KEYS[1] inbox key, KEYS[2] cart; ARGV: inbox ttl, product ids...
const CLEAR_ONCE: &str = r"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
for i = 2, #ARGV do
  redis.call('HDEL', KEYS[2], ARGV[i])
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
            invocation.key(cart).arg(7 * 86_400);
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
