//! The notification service's integration tests: the real service, real Postgres and
//! broker, and a real SMTP server in-process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly on purpose")]

mod delivery;
mod reads;
mod stop;
