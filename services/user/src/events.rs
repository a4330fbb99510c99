//! The events user-service publishes, built from the domain [`User`] in one place.

use shop_proto::shop::events::v1::UserRegistered;

use crate::store::User;

/// `UserRegistered`: a new account (notification welcomes it).
pub fn registered(user: &User) -> UserRegistered {
    UserRegistered {
        user_id: user.id.to_string(),
        email: user.email.clone(),
        name: user.name.clone(),
        registered_at: Some(shop_proto::time::timestamp(user.created_at)),
    }
}
