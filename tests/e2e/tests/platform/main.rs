//! Shop's end-to-end tests: several real services in-process, on real Postgres, Redis and
//! broker, with tokens from a test issuer (or, for the whole journey, the user service).
//!
//! Why a package of its own: a service's own tests start only that service, and no service
//! crate depends on another, dev-dependencies included. What needs more than one service
//! lives here:
//! - `checkout`: order with the real cart and product services (holds, prices, races,
//!   compensation);
//! - `saga`: the checkout saga over the broker, order → payment → order → product;
//! - `journey`: all six services and an SMTP server, from registration to refund;
//! - `fault`: a payment service or the broker killed mid-batch, nothing lost or doubled;
//! - `outage`: the broker unreachable: every service stays ready, checkout stays open;
//! - `cart`: the cart priced by the real product service;
//! - `authz`: the authorization matrix, every route and method × four callers;
//! - `trace`: one checkout's spans, exported over OTLP to a receiver, form one trace.
//!
//! Every service runs in this process (`app::build` + [`shop_testkit::TestServer`]),
//! each with its own database and Redis prefix, all on one topic prefix per test; none is
//! started from its binary (`env!("CARGO_BIN_EXE_…")` only names the binaries of the package
//! being tested, so a test that kills a service's process belongs to that service).
#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

mod authz;
mod cart;
mod checkout;
mod fault;
mod helpers;
mod journey;
mod outage;
mod saga;
mod trace;
