//! Shop's shared runtime: what every service stands on, and nothing domain-specific.
//!
//! # Layout
//! - [`backoff`]: exponential, capped, jittered pauses between retries.
//! - [`api`]: the REST conventions: [`api::Money`], [`api::Page`], opaque cursors.
//! - [`config`]: typed configuration from environment variables; one clear line per bad value.
//! - [`error`]: [`error::Problem`], the one mapping from an error to RFC 9457 problem+json
//!   and to a gRPC `Status`, and [`error::ApiJson`], a JSON extractor that answers in it.
//! - [`telemetry`]: the tracing subscriber, OpenTelemetry export and W3C propagation.
//! - [`metrics`]: the Prometheus recorder and the per-route RED middleware.
//! - [`openapi`]: the OpenAPI documents, generated from the routes, with the answers every
//!   route of a shape shares.
//! - [`server`]: one port serving REST and gRPC, health, readiness, metrics, OpenAPI,
//!   gRPC health and reflection, timeouts, body limits and graceful shutdown.
//! - [`db`]: the Postgres pool and embedded migrations under an advisory lock.
//! - [`cache`]: the Redis connection and per-deployment key prefixes.
//! - [`auth`]: EdDSA JWTs, JWKS, the caching JWKS client, the axum extractor and the gRPC
//!   layer that yield the [`auth::Caller`].
//! - [`events`]: Kafka: the transactional outbox and its relay, the consumer runner with its
//!   inbox, retries and dead-letter topics.
//! - [`grpc`]: outbound gRPC channels with deadlines and trace propagation.
//! - [`retention`]: pruning the rows kept only for a while (outbox, inbox and the
//!   services' own), in batches.
//! - [`service`]: the one start-up and shutdown path every service takes.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod backoff;
pub mod cache;
pub mod client_ip;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod grpc;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod retention;
pub mod server;
pub mod service;
pub mod telemetry;

/// For [`consumes!`]: the generated code decodes with the prost this crate uses.
#[doc(hidden)]
pub use prost as __prost;
