//! The payment service's integration tests: the real binary and the real broker/Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly on purpose")]

mod charges;
mod reads;
mod shutdown;
mod sigkill;
mod stop;
mod traces;
mod worker;
