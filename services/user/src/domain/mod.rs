//! Pure rules of the user service: validated newtypes, password hashing, token secrets.

mod email;
mod hashing;
mod name;
mod password;
mod refresh;

pub use email::{Email, MAX_LEN as EMAIL_MAX_LEN};
pub use hashing::{PasswordHasher, hash_is_current};
pub use name::UserName;
pub use password::{MAX_LEN as PASSWORD_MAX_LEN, Password};
pub use refresh::RefreshSecret;
