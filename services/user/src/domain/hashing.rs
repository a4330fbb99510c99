//! argon2id password hashing with OWASP's parameters (19 MiB, 2 passes, 1 lane), run on
//! the blocking pool so it never stalls the async runtime, and bounded by a semaphore so a
//! burst of logins cannot take 19 MiB per request without limit.

use std::sync::Arc;

use anyhow::Context as _;
use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString, rand_core::OsRng},
};
use tokio::sync::Semaphore;

use super::Password;

/// OWASP's argon2id recommendation: m = 19 MiB, t = 2, p = 1.
fn argon2() -> anyhow::Result<Argon2<'static>> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|error| anyhow::anyhow!("argon2 parameters: {error}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Whether `hash` was made with the current algorithm and parameters.
pub fn hash_is_current(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        parsed.algorithm.as_str() == "argon2id"
            && parsed.params.get_decimal("m") == Some(19 * 1024)
            && parsed.params.get_decimal("t") == Some(2)
            && parsed.params.get_decimal("p") == Some(1)
    })
}

/// Verified against when the account does not exist, so that an unknown email takes as long
/// to refuse as a wrong password: a real hash, with the current parameters, of a random
/// password that was thrown away. Its result is never used (`verify` answers no without an
/// account), only its cost, so it is a constant rather than a hash made at every start (an
/// argon2 run, ~60 ms of the service's start-up).
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$hwh+T9Jem90KS5yh0jJXlw$mCPxV+nlREnzVZ8i75L74VA4x7BsSqTLLrNTH54DIlE";

/// Hashes and verifies passwords off the async runtime.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
}

impl PasswordHasher {
    pub fn new(concurrency: usize) -> anyhow::Result<Self> {
        Ok(Self { permits: Arc::new(Semaphore::new(concurrency.max(1))) })
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`).
    pub async fn hash(&self, password: &Password) -> anyhow::Result<String> {
        let password = password.clone();
        self.blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon2()?
                .hash_password(password.expose().as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|error| anyhow::anyhow!("cannot hash a password: {error}"))
        })
        .await
    }

    /// Whether `password` matches `hash`; with no hash, spends the same time and says no.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> anyhow::Result<bool> {
        let known = hash.is_some();
        let hash = hash.unwrap_or(DECOY).to_owned();
        let password = password.to_owned();
        let matches = self
            .blocking(move || {
                let parsed =
                    PasswordHash::new(&hash).map_err(|error| anyhow::anyhow!("stored hash is invalid: {error}"))?;
                Ok(argon2()?.verify_password(password.as_bytes(), &parsed).is_ok())
            })
            .await?;
        Ok(known && matches)
    }

    async fn blocking<T, F>(&self, work: F) -> anyhow::Result<T>
    where
        F: FnOnce() -> anyhow::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let _permit = self.permits.acquire().await.context("the password hasher is closed")?;
        tokio::task::spawn_blocking(work).await.context("a password hashing task failed")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_accounts_never_match() {
        let hasher = PasswordHasher::new(2).unwrap();
        let password = Password::parse("correct horse").unwrap();
        let hash = hasher.hash(&password).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(hash_is_current(&hash));
        assert!(hasher.verify("correct horse", Some(&hash)).await.unwrap());
        assert!(!hasher.verify("wrong horse", Some(&hash)).await.unwrap());
        assert!(!hasher.verify("correct horse", None).await.unwrap());
        assert!(hasher.verify("x", Some("not a hash")).await.is_err());
        assert!(!hash_is_current("$argon2id$v=19$m=4096,t=3,p=1$c2FsdHNhbHQ$aGFzaGhhc2g"));
    }

    #[test]
    fn the_decoy_costs_what_a_real_hash_costs() {
        // Regenerate DECOY (a hash of a random, discarded password) when the parameters change.
        assert!(hash_is_current(DECOY), "the decoy must use the current parameters");
        let output = PasswordHash::new(DECOY).unwrap().hash.unwrap();
        assert_eq!(output.len(), argon2::Params::DEFAULT_OUTPUT_LEN, "and the default output length");
    }
}
