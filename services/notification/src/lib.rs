//! The notification service: tells people what happened.
//!
//! It consumes `UserRegistered` (learning the address, sending `welcome`), `OrderConfirmed`
//! (`order_confirmed`), `OrderCancelled` (`order_cancelled`), `OrderShipped` (`order_shipped`) and `PaymentRefunded`
//! (`payment_refunded`). Each event becomes one stored notification (unique by event id, so
//! an event never produces two); a delivery worker sends pending notifications by email
//! over SMTP when `SMTP_URL` is set, or to the log, records every attempt, retries
//! failures with backoff, and publishes `NotificationDelivered` on `shop.notification.v1`
//! through the outbox.
//!
//! # Layout
//! - [`config`]: environment variables.
//! - [`app`]: state, server, consumer, delivery worker.
//! - [`error`]: the service's errors and the one place they become problems.
//! - [`domain`]: the notification, its [`domain::Channel`] and [`domain::DeliveryStatus`].
//! - [`templates`]: subject, plain-text and HTML bodies per message (minijinja, from
//!   `templates/`), amounts in ISO 4217 minor units.
//! - [`events`]: what each event turns into.
//! - [`delivery`]: channels (SMTP, log) and the worker.
//! - [`http`]: `GET /v1/notifications`, a thin adapter over [`store`].
//! - [`grpc`]: `shop.notification.v1.NotificationService`, notifications by user.
//! - [`store`]: SQL for recipients, notifications and delivery attempts.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod http;
pub mod store;
pub mod templates;

/// This service's name: its telemetry, consumer group and server.
pub const SERVICE: &str = "notification-service";

/// The embedded migrations of `shop_notification`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
