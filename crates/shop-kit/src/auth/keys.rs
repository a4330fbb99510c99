//! The user service's signing keys: the one it signs with and the ones it publishes.

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::Serialize;
use sha2_free::thumbprint;

use super::{Jwk, Jwks};

/// The user service's private key.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    public_x: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads a PKCS#8 PEM Ed25519 private key (`openssl genpkey -algorithm ed25519`).
    pub fn from_pem(text: &str) -> anyhow::Result<Self> {
        let block = pem::parse(text.trim()).context("the signing key is not PEM")?;
        anyhow::ensure!(
            block.tag() == "PRIVATE KEY",
            "the signing key must be a PKCS#8 PRIVATE KEY, not {}",
            block.tag()
        );
        Self::from_pkcs8(block.contents())
    }

    fn from_pkcs8(der: &[u8]) -> anyhow::Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|error| anyhow::anyhow!("the signing key is not an Ed25519 PKCS#8 key: {error}"))?;
        let public_x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        Ok(Self { kid: thumbprint(&public_x), encoding: EncodingKey::from_ed_der(der), public_x })
    }

    /// A new random key and its PEM text (development only).
    pub fn generate() -> anyhow::Result<(Self, String)> {
        let rng = ring::rand::SystemRandom::new();
        let document = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| anyhow::anyhow!("cannot generate a key"))?;
        let text = pem::encode(&pem::Pem::new("PRIVATE KEY", document.as_ref().to_vec()));
        Ok((Self::from_pkcs8(document.as_ref())?, text))
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half, for the JWKS.
    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: self.public_x.clone(),
            kid: self.kid.clone(),
            alg: Some("EdDSA".into()),
            key_use: Some("sig".into()),
        }
    }

    /// Signs `claims` (a user's [`Claims`] or a [`service::ServiceClaims`]) into a compact JWT.
    pub fn sign<T: Serialize>(&self, claims: &T) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).context("cannot sign a token")
    }
}

/// The keys the user service holds: the one it signs with, and the ones it still (or already)
/// publishes and accepts. Rotation without a 401 goes through them in three rollouts of one
/// Secret value (docs/runbook.md): `current` → `current, next` (every verifier learns the next
/// key) → `next, current` (tokens signed by either verify everywhere while replicas roll) →
/// `next` once the last token signed by the old key has expired.
#[derive(Debug)]
pub struct SigningKeys {
    current: SigningKey,
    published: Vec<SigningKey>,
}

/// The most keys one service publishes: the signing key, the previous and the next.
pub const MAX_SIGNING_KEYS: usize = 3;

impl SigningKeys {
    /// One or more PKCS#8 PEM Ed25519 private keys, one after another: the first signs, the
    /// others are published in the JWKS and accepted too.
    pub fn from_pem(text: &str) -> anyhow::Result<Self> {
        let blocks = pem::parse_many(text.trim()).context("the signing keys are not PEM")?;
        anyhow::ensure!(!blocks.is_empty(), "no PEM key found");
        anyhow::ensure!(
            blocks.len() <= MAX_SIGNING_KEYS,
            "{} keys given; at most {MAX_SIGNING_KEYS} (the signing key, then the next or previous one)",
            blocks.len()
        );
        let mut keys = Vec::with_capacity(blocks.len());
        for (index, block) in blocks.iter().enumerate() {
            anyhow::ensure!(
                block.tag() == "PRIVATE KEY",
                "key {}: must be a PKCS#8 PRIVATE KEY, not {}",
                index + 1,
                block.tag()
            );
            let key = SigningKey::from_pkcs8(block.contents()).with_context(|| format!("key {}", index + 1))?;
            anyhow::ensure!(
                keys.iter().all(|other: &SigningKey| other.kid != key.kid),
                "key {} is given twice",
                index + 1
            );
            keys.push(key);
        }
        let current = keys.remove(0);
        Ok(Self { current, published: keys })
    }

    /// Only `key`, as a development service generates it.
    pub fn single(key: SigningKey) -> Self {
        Self { current: key, published: Vec::new() }
    }

    /// The key new tokens are signed with.
    pub fn current(&self) -> &SigningKey {
        &self.current
    }

    /// Every public key, the signing key first.
    pub fn jwks(&self) -> Jwks {
        Jwks { keys: std::iter::once(&self.current).chain(&self.published).map(SigningKey::jwk).collect() }
    }
}

/// RFC 7638 thumbprints without pulling a JSON canonicaliser: the members are fixed.
mod sha2_free {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

    pub(super) fn thumbprint(x: &str) -> String {
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }
}
