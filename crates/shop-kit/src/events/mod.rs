//! Reliable messaging over Kafka: a transactional outbox, its relay, and a consumer runner
//! that applies each event exactly once.
//!
//! - [`enqueue`] writes an [`Event`] into the `outbox` table in the caller's transaction,
//!   next to the state change it describes, and wakes the relay (`NOTIFY shop_outbox`). An
//!   event is made from a proto message with [`Topics::event`]: its topic, CloudEvents type
//!   and source come from the message's contract ([`shop_proto::contracts`]), never from a
//!   typed string.
//! - [`Relay`] publishes unpublished rows in order with an idempotent producer (`acks=all`)
//!   and marks them published. It wakes on `LISTEN shop_outbox` and polls as a fallback.
//!   Rows are taken `FOR UPDATE SKIP LOCKED`, and one relay at a time publishes a given topic
//!   (a transaction-scoped advisory lock per topic), so several replicas can run relays
//!   without reordering one aggregate's events. Backlog size and oldest age are metrics.
//! - [`ConsumerRunner`] reads the topics of the message types its handler names (a
//!   [`consumes!`](crate::consumes) enum) in a consumer group (the service's name) with
//!   auto-commit off. Each message is decoded into that enum first: a type the consumer
//!   neither handles nor ignores, or a payload that does not decode, goes to `<topic>.dlq`
//!   with the reason. For each event it opens a transaction, records the CloudEvents `ce_id`
//!   in the `inbox` table (a duplicate is skipped), runs the handler's effect in the same
//!   transaction, commits, and only then lets the offset move on (offsets of applied events
//!   are committed every 200 ms and on shutdown). With [`ConsumerRunner::batch`], the events
//!   already waiting are applied together in one transaction; if any of them fails, the batch
//!   rolls back and its events are applied one at a time. A handler failure is retried with
//!   backoff and jitter a bounded number of times ([`HandleError`] says which failures are
//!   worth it), then the message goes to `<topic>.dlq` with the error in its headers; nothing
//!   is dropped silently. Database outages are retried without bound.
//!
//! Messages follow the CloudEvents Kafka binding in binary mode: headers `ce_specversion`,
//! `ce_id` (UUIDv7), `ce_source`, `ce_type`, `ce_time`, `content-type:
//! application/protobuf`, and W3C `traceparent`/`tracestate`; the key is the aggregate id.
//!
//! # Layout
//! - `config`: [`KafkaConfig`], [`Topics`] (names with the environment's prefix), topic
//!   creation for development.
//! - `outbox`: [`Event`], [`enqueue`] and the statement pieces for one-statement writes.
//! - `publisher`: [`Publisher`], the service's one producer.
//! - `relay`: [`Relay`].
//! - `dispatch`: [`Consumes`], [`Received`] and the [`consumes!`](crate::consumes) macro.
//! - `inbox`: [`Handler`], [`ApplyOnce`] and [`PgInbox`], the exactly-once step.
//! - `consumer`: [`ConsumerRunner`]: fetching, committing, stopping.
//! - `apply`: decoding, applying (in batches), retries and dead letters.
//! - `dead_letter`: publishing to `<topic>.dlq`.
//! - `watchdog`: rejoining a group the broker left stuck.
//!
//! The `outbox` and `inbox` tables come from this crate's migrations ([`MIGRATOR`]), which
//! [`crate::db::prepare`] applies together with the service's own.

mod apply;
mod config;
mod consumer;
mod dead_letter;
mod dispatch;
mod inbox;
mod outbox;
mod publisher;
mod relay;
pub mod security;
mod watchdog;

use std::time::Duration;

pub use config::{KafkaConfig, Topics, ensure_topics};
pub use consumer::{ConsumerRunner, Delivery, Outcome};
pub use dispatch::{Consumes, Received, Refusal};
pub use inbox::{ApplyError, ApplyOnce, HandleError, Handler, PgInbox};
pub use outbox::{Event, Traced, WAKE_RELAY, enqueue, outbox_insert};
pub use publisher::Publisher;
pub use relay::Relay;
pub use shop_proto::contracts::{EventContract, Topic};

/// The migrations of the `outbox` and `inbox` tables, applied with every service's own.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// `base × 2^(attempt-1)`, capped at 30 s, with ±50 % jitter.
fn backoff(attempt: u32, base: Duration) -> Duration {
    crate::backoff::exponential(attempt, base, Duration::from_secs(30))
}
