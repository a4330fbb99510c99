//! The JWKS cache against a real HTTP JWKS server that can be slowed to a hang: a stale set is
//! served while one background fetch revalidates, unknown key ids share one fetch per
//! interval, and signing-key rotation through published next/previous keys costs no 401.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly on purpose")]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, routing::get};
use shop_kit::auth::{AuthConfig, Claims, Jwks, JwksClient, KeySource, Role, SigningKey, SigningKeys, Verifier};

/// A JWKS endpoint whose document can be changed, that counts its requests and that can be
/// made to hang (accept, never answer).
#[derive(Clone, Default)]
struct JwksServer {
    document: Arc<Mutex<Jwks>>,
    requests: Arc<AtomicUsize>,
    hang: Arc<AtomicBool>,
}

impl JwksServer {
    async fn start(document: Jwks) -> (Self, String) {
        let server = Self { document: Arc::new(Mutex::new(document)), ..Self::default() };
        let router = Router::new().route("/jwks", get(serve)).with_state(server.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (server, url)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn serve(State(server): State<JwksServer>) -> Json<Jwks> {
    server.requests.fetch_add(1, Ordering::SeqCst);
    if server.hang.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    Json(server.document.lock().unwrap().clone())
}

fn config() -> AuthConfig {
    AuthConfig {
        issuer: "shop-user".into(),
        audience: "shop".into(),
        jwks_url: None,
        jwks_ttl: Duration::from_secs(300),
    }
}

fn token(key: &SigningKey) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: uuid::Uuid::now_v7(),
        role: Role::Customer,
        iss: "shop-user".into(),
        aud: "shop".into(),
        iat: now,
        exp: now + 600,
        jti: uuid::Uuid::now_v7(),
    };
    key.sign(&claims).unwrap()
}

fn verifier(url: &str, ttl: Duration) -> Arc<Verifier> {
    Arc::new(Verifier::new(&config(), KeySource::Jwks(JwksClient::new(url, ttl).unwrap())))
}

/// With the user service hanging and the cached set past its TTL, 50 concurrent checks of a
/// known key all pass before the one revalidating fetch could even time out (3 s), and that
/// fetch is the only request made.
#[tokio::test]
async fn a_stale_set_is_served_while_one_background_fetch_revalidates() {
    let (key, _) = SigningKey::generate().unwrap();
    let (server, url) = JwksServer::start(Jwks { keys: vec![key.jwk()] }).await;
    let verifier = verifier(&url, Duration::from_secs(1));
    let token = token(&key);
    verifier.verify(&token).await.unwrap();
    assert_eq!(server.requests(), 1);

    // Past the TTL and the least time between fetches.
    tokio::time::sleep(shop_kit::auth::MIN_REFRESH + Duration::from_millis(100)).await;
    server.hang.store(true, Ordering::SeqCst);
    let checks = (0..50).map(|_| {
        let (verifier, token) = (Arc::clone(&verifier), token.clone());
        tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(2), verifier.verify(&token)).await })
    });
    for check in futures::future::join_all(checks).await {
        let verified = check.unwrap().expect("a check waited for the hanging JWKS fetch");
        assert!(verified.is_ok(), "{verified:?}");
    }
    shop_testkit::eventually("the background fetch", Duration::from_secs(5), || async {
        (server.requests() == 2).then_some(())
    })
    .await;
    verifier.verify(&token).await.unwrap();
    assert_eq!(server.requests(), 2, "one revalidation, not one per check");
}

/// Tokens with made-up key ids are refused (401) and cost one shared fetch per interval, not
/// one each.
#[tokio::test]
async fn unknown_key_ids_share_one_fetch_per_interval() {
    let (key, _) = SigningKey::generate().unwrap();
    let (server, url) = JwksServer::start(Jwks { keys: vec![key.jwk()] }).await;
    let verifier = verifier(&url, Duration::from_secs(300));
    verifier.verify(&token(&key)).await.unwrap();
    tokio::time::sleep(shop_kit::auth::MIN_REFRESH).await;
    let forged: Vec<String> = (0..100).map(|_| token(&SigningKey::generate().unwrap().0)).collect();
    let checks = forged.iter().map(|token| verifier.verify(token));
    for refused in futures::future::join_all(checks).await {
        assert_eq!(refused.unwrap_err().status, 401);
    }
    assert_eq!(server.requests(), 2, "one fetch for all the unknown ids together");
}

/// With no cached set and the JWKS unreachable, a check is 503 (retry), not 401 (re-login).
#[tokio::test]
async fn without_any_keys_an_unreachable_jwks_is_unavailable_not_unauthenticated() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    drop(listener);
    let (key, _) = SigningKey::generate().unwrap();
    let refused = verifier(&url, Duration::from_secs(300)).verify(&token(&key)).await.unwrap_err();
    assert_eq!(refused.status, 503);
}

/// The three rollouts of docs/runbook.md's rotation, with replicas on different steps at
/// once: every token verifies at every verifier that fetched the JWKS of any replica.
#[tokio::test]
async fn rotating_the_signing_key_through_next_and_previous_costs_no_401() {
    let (old, old_pem) = SigningKey::generate().unwrap();
    let (_, new_pem) = SigningKey::generate().unwrap();
    let step0 = SigningKeys::from_pem(&old_pem).unwrap();
    let step1 = SigningKeys::from_pem(&format!("{old_pem}\n{new_pem}")).unwrap();
    let step2 = SigningKeys::from_pem(&format!("{new_pem}\n{old_pem}")).unwrap();
    let step3 = SigningKeys::from_pem(&new_pem).unwrap();
    assert_eq!(step1.current().kid(), old.kid(), "step 1 still signs with the old key");
    assert_eq!(step1.jwks().keys.len(), 2, "and publishes the next one");
    assert_eq!(step2.jwks().keys[0].kid, step3.current().kid(), "the signing key is listed first");

    // Verifiers cached the JWKS of a replica at step 1 (before any replica signed with the new
    // key); replicas at steps 1 and 2 then run side by side during the second rollout.
    let (server, url) = JwksServer::start(step1.jwks()).await;
    let cached_at_step1 = verifier(&url, Duration::from_secs(300));
    let at_step2 = Verifier::new(&config(), KeySource::from_jwks(&step2.jwks()));
    for signer in [&step0, &step1, &step2] {
        let token = token(signer.current());
        cached_at_step1.verify(&token).await.unwrap();
        at_step2.verify(&token).await.unwrap();
    }
    assert_eq!(server.requests(), 1, "no fetch was needed: the next key was published first");
    // After the old key's last token expired, step 3 drops it; new tokens still verify.
    let at_step3 = Verifier::new(&config(), KeySource::from_jwks(&step3.jwks()));
    at_step3.verify(&token(step2.current())).await.unwrap();
    assert_eq!(at_step3.verify(&token(&old)).await.unwrap_err().status, 401, "the retired key is refused");

    for (text, why) in [
        (String::new(), "no PEM"),
        (format!("{old_pem}\n{old_pem}"), "twice"),
        (
            format!(
                "{old_pem}\n{new_pem}\n{}\n{}",
                SigningKey::generate().unwrap().1,
                SigningKey::generate().unwrap().1
            ),
            "at most 3",
        ),
    ] {
        let error = format!("{:#}", SigningKeys::from_pem(&text).unwrap_err());
        assert!(error.contains(why), "{why}: {error}");
    }
}
