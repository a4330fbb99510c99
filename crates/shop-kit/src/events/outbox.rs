//! The transactional outbox: an event is a row written in the transaction of the state
//! change it describes; the relay publishes it after the commit.

use shop_proto::contracts::EventContract;
use sqlx::PgConnection;
use uuid::Uuid;

/// The channel the relay listens on.
pub(super) const CHANNEL: &str = "shop_outbox";

/// An event to publish. Made from a proto message with [`super::Topics::event`], so its
/// topic, type and source are the message's contract.
#[derive(Clone, Debug)]
pub struct Event {
    /// The CloudEvents id: the consumers' deduplication key.
    pub id: Uuid,
    /// The full topic name (with the environment's prefix).
    pub topic: String,
    /// The aggregate id: one aggregate's events keep their order.
    pub key: String,
    /// `shop.order.v1.OrderPlaced`: never carries the prefix.
    pub ce_type: String,
    /// The owner of the topic, `/shop/order`.
    pub source: String,
    /// The encoded protobuf message.
    pub payload: Vec<u8>,
}

impl Event {
    /// `message` on `topic` (its contract's topic with the environment's prefix).
    pub(super) fn of<M: EventContract>(topic: String, key: String, message: &M) -> Self {
        Self {
            id: Uuid::now_v7(),
            topic,
            key,
            ce_type: M::ce_type(),
            source: M::TOPIC.source.to_owned(),
            payload: message.encode_to_vec(),
        }
    }
}

/// An event with the trace context of the span that enqueues it: what one outbox row holds.
pub struct Traced<'a> {
    event: &'a Event,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl<'a> Traced<'a> {
    /// `event` under the current span's trace context.
    pub fn current(event: &'a Event) -> Self {
        let crate::telemetry::StoredContext { traceparent, tracestate } = crate::telemetry::StoredContext::current();
        Self { event, traceparent, tracestate }
    }

    /// Binds the eight values of [`outbox_insert`], in its order.
    pub fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(self.event.id)
            .bind(&self.event.topic)
            .bind(&self.event.key)
            .bind(&self.event.ce_type)
            .bind(&self.event.source)
            .bind(&self.event.payload)
            .bind(self.traceparent.as_deref())
            .bind(self.tracestate.as_deref())
    }
}

/// The statement that writes one outbox row, its eight parameters numbered from `$first`
/// (bind them with [`Traced::bind`]). A service that stores its state change and the event
/// in one statement uses it as a data-modifying CTE next to its own writes, and ends the
/// statement with [`WAKE_RELAY`]: one round trip to Postgres for the whole change.
pub fn outbox_insert(first: usize) -> String {
    let parameters: Vec<String> = (first..first + 8).map(|n| format!("${n}")).collect();
    format!(
        "INSERT INTO outbox (id, topic, key, ce_type, ce_source, payload, traceparent, tracestate) VALUES ({})",
        parameters.join(", ")
    )
}

/// The final `SELECT` of a statement that wrote outbox rows: wakes the relays when it commits.
pub const WAKE_RELAY: &str = "SELECT pg_notify('shop_outbox', '')";

/// Writes `event` into the outbox within the caller's transaction, with the current trace
/// context, and wakes the relay when the transaction commits (one statement).
pub async fn enqueue(connection: &mut PgConnection, event: &Event) -> Result<(), sqlx::Error> {
    static SQL: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("WITH event AS ({}) {WAKE_RELAY}", outbox_insert(1)));
    let traced = Traced::current(event);
    traced.bind(sqlx::query(SQL.as_str())).execute(connection).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_insert_numbers_its_parameters_and_wakes_the_channel_the_relay_listens_on() {
        assert!(
            outbox_insert(15).ends_with("VALUES ($15, $16, $17, $18, $19, $20, $21, $22)"),
            "{}",
            outbox_insert(15)
        );
        assert!(WAKE_RELAY.contains(&format!("'{CHANNEL}'")));
    }
}
