//! Refresh-token secrets: 256 random bits shown once to the client; only their SHA-256
//! is stored, so a copy of the database holds no usable token.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

pub struct RefreshSecret(String);

impl RefreshSecret {
    pub fn generate() -> Self {
        let mut bytes = [0_u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The value handed to the client.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// What the database stores and looks up by.
    pub fn hash(&self) -> Vec<u8> {
        Self::hash_of(&self.0)
    }

    /// The stored form of a token presented by a client.
    pub fn hash_of(presented: &str) -> Vec<u8> {
        Sha256::digest(presented.as_bytes()).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_unique_and_hashed() {
        let one = RefreshSecret::generate();
        let two = RefreshSecret::generate();
        assert_ne!(one.reveal(), two.reveal());
        assert_eq!(one.reveal().len(), 43);
        assert_eq!(one.hash(), RefreshSecret::hash_of(one.reveal()));
        assert_eq!(one.hash().len(), 32);
    }
}
