//! Code generated from the `.proto` contracts in `proto/` at build time, and the event
//! contracts that go with them.
//!
//! # Layout
//! - [`shop`]: one module per protobuf package, nested as the package name is
//!   (`shop::user::v1`). Every message implements [`prost::Name`].
//! - [`contracts`]: which topic each event message travels on and which service owns that
//!   topic; the CloudEvents type of an event comes from here, never from a typed string.
//! - [`time`]: `google.protobuf.Timestamp` ↔ `chrono` conversions.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptor of every file, for gRPC reflection.

pub mod contracts;
pub mod limits;
pub mod time;

/// The encoded `FileDescriptorSet` of every Shop proto file, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/shop_descriptor.bin"));

/// Generated code is not ours to lint.
#[allow(
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    reason = "generated code: which lints fire is not ours to know"
)]
pub mod shop {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("shop.common.v1");
        }
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("shop.events.v1");
        }
    }
    pub mod order {
        pub mod v1 {
            tonic::include_proto!("shop.order.v1");
        }
    }
    pub mod product {
        pub mod v1 {
            tonic::include_proto!("shop.product.v1");
        }
    }
    pub mod cart {
        pub mod v1 {
            tonic::include_proto!("shop.cart.v1");
        }
    }
    pub mod user {
        pub mod v1 {
            tonic::include_proto!("shop.user.v1");
        }
    }
    pub mod payment {
        pub mod v1 {
            tonic::include_proto!("shop.payment.v1");
        }
    }
    pub mod notification {
        pub mod v1 {
            tonic::include_proto!("shop.notification.v1");
        }
    }
}
