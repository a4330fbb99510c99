//! Storage: SQL for users and refresh tokens (functions take a connection, so callers
//! decide the transaction), and the Redis login limiter. Rows stay private here.

mod login_limiter;
pub(crate) mod refresh_tokens;
pub(crate) mod users;

pub use login_limiter::{LoginLimiter, Verdict};
pub use refresh_tokens::{Consumed, RefreshToken};
pub use users::{NewUser, User, UserChanges};
