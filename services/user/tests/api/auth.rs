use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shop_kit::auth::{AuthConfig, Claims, JwksClient, KeySource, Role, SigningKey, Verifier};
use user_service::http::TokenResponse;

use crate::helpers::{assert_problem, spawn_app, spawn_with};

#[tokio::test]
async fn login_issues_tokens_and_refuses_alike_for_unknown_email_and_wrong_password() {
    let app = spawn_app().await;
    let (id, tokens) = app.customer("ada@example.com").await;
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.expires_in, 900);
    assert_eq!(tokens.access_token.split('.').count(), 3);

    let key = SigningKey::from_pem(&app.signing_pem).unwrap();
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(tokens.access_token.split('.').next().unwrap()).unwrap())
            .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], key.kid());
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(tokens.access_token.split('.').nth(1).unwrap()).unwrap())
            .unwrap();
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["role"], "customer");
    assert_eq!(claims["iss"], "shop-user");
    assert_eq!(claims["aud"], "shop");

    let wrong_password: Value = assert_problem(
        app.login("ada@example.com", "wrong-password").await,
        401,
        "invalid_credentials",
        "wrong password",
    )
    .await;
    let unknown: Value = assert_problem(
        app.login("nobody@example.com", "wrong-password").await,
        401,
        "invalid_credentials",
        "unknown email",
    )
    .await;
    assert_eq!(wrong_password, unknown, "the two refusals must be identical");
    let malformed =
        assert_problem(app.login("not-an-email", "whatever-1").await, 401, "invalid_credentials", "malformed email")
            .await;
    assert_eq!(malformed, unknown);
    // Case and spaces do not matter.
    assert_eq!(app.login(" ADA@example.com", "password-123").await.status(), StatusCode::OK);

    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "email too long",
            json!({"email": format!("{}@x.io", "a".repeat(300)), "password": "p"}),
            422,
            "validation_failed",
        ),
        (
            "password too long",
            json!({"email": "ada@example.com", "password": "p".repeat(129)}),
            422,
            "validation_failed",
        ),
        ("missing password", json!({"email": "ada@example.com"}), 422, "validation_failed"),
        ("wrong type", json!({"email": "ada@example.com", "password": 12345678}), 422, "validation_failed"),
    ];
    for (case, body, status, code) in cases {
        assert_problem(app.post("/v1/auth/login", &body).await, status, code, case).await;
    }
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"].to_str().unwrap().parse().unwrap()
}

/// The first lockout of issue #14: five wrong passwords from one client locked the account for
/// everyone. Now only that client waits; the owner, from another address, logs in.
#[tokio::test]
async fn failures_on_an_account_make_only_that_client_wait() {
    let app = spawn_app().await;
    app.customer("ada@example.com").await;
    let attacker = [127, 0, 0, 2];
    for attempt in 1..=5 {
        let response = app.login_from(attacker, "ada@example.com", "wrong-password").await;
        assert_problem(response, 401, "invalid_credentials", &format!("attempt {attempt}")).await;
    }
    let limited = app.login_from(attacker, "ada@example.com", "wrong-password").await;
    assert!((1..=900).contains(&retry_after(&limited)), "{}", retry_after(&limited));
    assert_problem(limited, 429, "rate_limited", "sixth failure").await;
    // Even the right password waits at that client: that is what stops guessing.
    let right = app.login_from(attacker, "ada@example.com", "password-123").await;
    assert_problem(right, 429, "rate_limited", "right password from the guessing client").await;
    // The owner, from another address, is not locked out.
    assert_eq!(app.login_from([127, 0, 0, 3], "ada@example.com", "password-123").await.status(), StatusCode::OK);
    // And the guessing client may still use other accounts.
    app.customer("bob@example.com").await;
    assert_eq!(app.login_from(attacker, "bob@example.com", "password-123").await.status(), StatusCode::OK);
}

/// Thirty wrong passwords sent at once from one client get five tries, not thirty: each
/// attempt is counted before its password is checked, atomically with the limit check.
#[tokio::test]
async fn guesses_sent_in_parallel_get_no_more_tries_than_guesses_in_a_row() {
    let app = spawn_app().await;
    app.customer("ada@example.com").await;
    let guesses = (0..30).map(|_| app.login_from([127, 0, 0, 5], "ada@example.com", "wrong-password"));
    let statuses: Vec<u16> = futures::future::join_all(guesses).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|&&status| status == 401).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|&&status| status == 429).count(), 25, "{statuses:?}");
}

/// The second lockout of issue #14: behind an ingress every client had the ingress's address,
/// so one script's failures made every login 429. With `TRUSTED_PROXY_HOPS` the limit per
/// client is per real client, whatever address the script puts first in `X-Forwarded-For`.
#[tokio::test]
async fn behind_a_proxy_failures_are_counted_per_real_client() {
    let app = spawn_with(|vars| {
        vars.with("TRUSTED_PROXY_HOPS", "1")
            .with("LOGIN_MAX_FAILURES_PER_CLIENT", "4")
            .with("LOGIN_FAILURE_WINDOW", "1m")
    })
    .await;
    app.customer("ada@example.com").await;
    let script = "203.0.113.66";
    for who in ["v@example.com", "w@example.com", "x@example.com", "y@example.com"] {
        assert_problem(app.login_via_proxy(script, who, "wrong-password").await, 401, "invalid_credentials", who).await;
    }
    let limited = app.login_via_proxy(script, "z@example.com", "wrong-password").await;
    assert!(retry_after(&limited) <= 60);
    assert_problem(limited, 429, "rate_limited", "fifth account from the script").await;
    // Every other client comes through the same proxy (the same peer address) and logs in.
    for client in ["198.51.100.1", "198.51.100.2"] {
        assert_eq!(app.login_via_proxy(client, "ada@example.com", "password-123").await.status(), StatusCode::OK);
    }
}

/// Guessing spread over many addresses stops at the account-wide ceiling, for addresses the
/// account has not logged in from; the owner's usual address still gets in.
#[tokio::test]
async fn the_account_ceiling_stops_a_botnet_but_not_the_owners_known_address() {
    let app = spawn_with(|vars| {
        vars.with("TRUSTED_PROXY_HOPS", "1")
            .with("LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_CLIENT", "2")
            .with("LOGIN_MAX_FAILURES_PER_ACCOUNT", "6")
    })
    .await;
    app.customer("ada@example.com").await;
    let home = "198.51.100.7";
    assert_eq!(app.login_via_proxy(home, "ada@example.com", "password-123").await.status(), StatusCode::OK);
    for bot in 1..=3 {
        for _ in 0..2 {
            let response = app.login_via_proxy(&format!("203.0.113.{bot}"), "ada@example.com", "guess").await;
            assert_problem(response, 401, "invalid_credentials", &format!("bot {bot}")).await;
        }
    }
    // Six failures on the account: a new address waits, even with the right password.
    let fresh = app.login_via_proxy("192.0.2.50", "ada@example.com", "password-123").await;
    assert!((1..=900).contains(&retry_after(&fresh)));
    assert_problem(fresh, 429, "rate_limited", "an address the account never used").await;
    // The owner's usual address is vouched for by its earlier login.
    assert_eq!(app.login_via_proxy(home, "ada@example.com", "password-123").await.status(), StatusCode::OK);
    // Another account is not affected by this one's ceiling.
    app.customer("bob@example.com").await;
    assert_eq!(app.login_via_proxy("192.0.2.50", "bob@example.com", "password-123").await.status(), StatusCode::OK);
}

/// `RATE_LIMIT_LOGIN` counts every attempt from a client, right or wrong.
#[tokio::test]
async fn login_attempts_per_client_are_rate_limited() {
    let app = spawn_with(|vars| vars.with("RATE_LIMIT_LOGIN", "3/1m")).await;
    app.customer("ada@example.com").await; // its login is the first attempt
    for _ in 0..2 {
        assert_eq!(app.login("ada@example.com", "password-123").await.status(), StatusCode::OK);
    }
    let limited = app.login("ada@example.com", "password-123").await;
    assert!((15..=20).contains(&retry_after(&limited)), "one allowance every 20 s: {}", retry_after(&limited));
    assert_problem(limited, 429, "rate_limited", "fourth login in a minute").await;
    assert_eq!(app.login_from([127, 0, 0, 4], "ada@example.com", "password-123").await.status(), StatusCode::OK);
}

/// `RATE_LIMIT_REFRESH` per client address.
#[tokio::test]
async fn refreshes_per_client_are_rate_limited() {
    let app = spawn_with(|vars| vars.with("RATE_LIMIT_REFRESH", "2/1m")).await;
    let (_, tokens) = app.customer("ada@example.com").await;
    let second: TokenResponse = app.refresh(tokens.refresh_token).await.json().await.unwrap();
    let third: TokenResponse = app.refresh(second.refresh_token).await.json().await.unwrap();
    let limited = app.refresh(third.refresh_token.clone()).await;
    assert!((1..=30).contains(&retry_after(&limited)));
    assert_problem(limited, 429, "rate_limited", "third refresh").await;
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_revokes_the_family() {
    let app = spawn_app().await;
    let (_, first) = app.customer("ada@example.com").await;
    let refresh = |token: &str| app.refresh(token.to_owned());

    let second: TokenResponse = refresh(&first.refresh_token).await.json().await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(app.get_with_token("/v1/users/me", &second.access_token).await.status(), StatusCode::OK);
    let third: TokenResponse = refresh(&second.refresh_token).await.json().await.unwrap();

    // The first token is presented again: a thief or a replay. The whole family dies.
    assert_problem(refresh(&first.refresh_token).await, 401, "refresh_token_reused", "reuse").await;
    assert_problem(refresh(&third.refresh_token).await, 401, "invalid_refresh_token", "latest after reuse").await;

    // Another login (family) is untouched.
    let other: TokenResponse = app.login("ada@example.com", "password-123").await.json().await.unwrap();
    assert_eq!(refresh(&other.refresh_token).await.status(), StatusCode::OK);

    for (case, body) in [
        ("unknown", json!({"refresh_token": "nope"})),
        ("empty", json!({"refresh_token": ""})),
        ("huge", json!({"refresh_token": "x".repeat(10_000)})),
    ] {
        assert_problem(app.post("/v1/auth/refresh", &body).await, 401, "invalid_refresh_token", case).await;
    }
    assert_problem(app.post("/v1/auth/refresh", &json!({})).await, 422, "validation_failed", "missing").await;
}

#[tokio::test]
async fn concurrent_use_of_one_refresh_token_counts_as_reuse() {
    let app = spawn_app().await;
    let (_, tokens) = app.customer("ada@example.com").await;
    let body = json!({"refresh_token": tokens.refresh_token});
    let (a, b) = tokio::join!(app.post("/v1/auth/refresh", &body), app.post("/v1/auth/refresh", &body));
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401], "exactly one may win");
}

#[tokio::test]
async fn logout_ends_the_login() {
    let app = spawn_app().await;
    let (_, tokens) = app.customer("ada@example.com").await;
    let rotated: TokenResponse =
        app.post("/v1/auth/refresh", &json!({"refresh_token": tokens.refresh_token})).await.json().await.unwrap();
    let logout = app.post("/v1/auth/logout", &json!({"refresh_token": rotated.refresh_token})).await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let after = app.post("/v1/auth/refresh", &json!({"refresh_token": rotated.refresh_token})).await;
    assert_problem(after, 401, "invalid_refresh_token", "after logout").await;
    // Unknown tokens log out quietly too; no oracle.
    assert_eq!(
        app.post("/v1/auth/logout", &json!({"refresh_token": "unknown"})).await.status(),
        StatusCode::NO_CONTENT
    );
    // What the schema forbids (empty, over 512 characters) is refused, as the schema says.
    for (case, token) in [("empty", String::new()), ("too long", "t".repeat(513))] {
        let refused = app.post("/v1/auth/logout", &json!({"refresh_token": token})).await;
        assert_problem(refused, 422, "validation_failed", case).await;
    }
}

/// Postgres refuses a NUL in a text parameter: a login with one must be the ordinary 401,
/// not a 500 (schemathesis found it).
#[tokio::test]
async fn a_nul_in_the_login_email_is_an_ordinary_failure() {
    let app = spawn_app().await;
    let login = app.post("/v1/auth/login", &json!({"email": "a\u{0}@example.com", "password": "password-123"})).await;
    assert_problem(login, 401, "invalid_credentials", "nul").await;
}

#[tokio::test]
async fn forged_expired_and_unsigned_tokens_are_refused_everywhere() {
    let app = spawn_app().await;
    let (id, tokens) = app.customer("ada@example.com").await;
    let key = SigningKey::from_pem(&app.signing_pem).unwrap();
    let (stranger, _) = SigningKey::generate().unwrap();
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: uuid::Uuid::parse_str(&id).unwrap(),
        role: Role::Admin,
        iss: "shop-user".into(),
        aud: "shop".into(),
        iat: now,
        exp: now + 600,
        jti: uuid::Uuid::now_v7(),
    };
    let b64 = |value: Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let payload = b64(serde_json::to_value(&claims).unwrap());
    let valid_signature = tokens.access_token.rsplit('.').next().unwrap().to_owned();
    let cases: Vec<(&str, String)> = vec![
        ("signed by another key", stranger.sign(&claims).unwrap()),
        ("expired", key.sign(&Claims { exp: now - 3600, iat: now - 7200, ..claims.clone() }).unwrap()),
        ("alg none", format!("{}.{payload}.", b64(json!({"alg": "none", "typ": "JWT", "kid": key.kid()})))),
        ("alg HS256 with the public key", {
            let header = jsonwebtoken::Header {
                kid: Some(key.kid().to_owned()),
                ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
            };
            jsonwebtoken::encode(
                &header,
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(key.jwk().x.as_bytes()).unwrap(),
            )
            .unwrap()
        }),
        (
            "role escalated, signature reused",
            format!("{}.{payload}.{valid_signature}", tokens.access_token.split('.').next().unwrap()),
        ),
        ("wrong audience", key.sign(&Claims { aud: "another-app".into(), ..claims.clone() }).unwrap()),
        ("garbage", "garbage".into()),
    ];
    for (case, token) in cases {
        let response = app.get_with_token("/v1/users/me", &token).await;
        assert_problem(response, 401, "unauthenticated", case).await;
    }
    for (case, header) in [("basic scheme", "Basic YWRhOnB3"), ("bearer no token", "Bearer "), ("no scheme", "abc")] {
        let response = app.client.get(app.url("/v1/users/me")).header("authorization", header).send().await.unwrap();
        assert_problem(response, 401, "unauthenticated", case).await;
    }
}

#[tokio::test]
async fn other_services_verify_tokens_through_the_jwks() {
    let app = spawn_app().await;
    let (id, tokens) = app.customer("ada@example.com").await;
    let jwks = app.client.get(app.url("/.well-known/jwks.json")).send().await.unwrap();
    assert_eq!(jwks.headers()["cache-control"], "public, max-age=300");
    let jwks: Value = jwks.json().await.unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    assert!(jwks["keys"][0].get("d").is_none(), "the private part must never be published");

    let config = AuthConfig {
        issuer: "shop-user".into(),
        audience: "shop".into(),
        jwks_url: None,
        jwks_ttl: Duration::from_secs(60),
    };
    let client = JwksClient::new(&app.url("/.well-known/jwks.json"), Duration::from_secs(60)).unwrap();
    let verifier = Verifier::new(&config, KeySource::Jwks(client));
    let caller = verifier.verify(&tokens.access_token).await.unwrap();
    assert_eq!(caller.user_id.to_string(), id);
    assert_eq!(caller.role, Role::Customer);
    let (stranger, _) = SigningKey::generate().unwrap();
    let forged = stranger
        .sign(&Claims {
            sub: caller.user_id,
            role: Role::Admin,
            iss: "shop-user".into(),
            aud: "shop".into(),
            iat: 0,
            exp: i64::MAX / 4,
            jti: uuid::Uuid::now_v7(),
        })
        .unwrap();
    assert_eq!(verifier.verify(&forged).await.unwrap_err().status, 401);

    // While the user service is down, cached keys keep working.
    app.server.stop().await.unwrap();
    assert!(verifier.verify(&tokens.access_token).await.is_ok());
}

#[tokio::test]
async fn logins_keep_working_when_the_limiter_redis_goes_down() {
    let proxy = shop_testkit::TcpProxy::start("127.0.0.1:6379").await;
    let address = proxy.address();
    let app =
        spawn_with(|vars| vars.with("REDIS_URL", format!("redis://{address}")).with("REDIS_TIMEOUT", "200ms")).await;
    app.customer("ada@example.com").await;
    proxy.cut();
    for attempt in 0..3 {
        assert_eq!(app.login("ada@example.com", "password-123").await.status(), StatusCode::OK, "attempt {attempt}");
        assert_problem(
            app.login("ada@example.com", "wrong-password").await,
            401,
            "invalid_credentials",
            "wrong while down",
        )
        .await;
    }
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "the limiter's Redis is optional");
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
}

/// Whoever registers the admin's email before the operator configures it gains nothing: at
/// start-up the account is promoted with the configured password and every session it had
/// is revoked, so neither its refresh token nor its password works.
#[tokio::test]
async fn a_customer_holding_the_admin_email_loses_its_sessions_when_promoted() {
    let first = spawn_app().await;
    assert_eq!(first.register("boss@shop.test", "squatter-password", "Mallory").await.status(), 201);
    let tokens: Value = first.login("boss@shop.test", "squatter-password").await.json().await.unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    // The operator makes that email the admin and restarts the service on the same database.
    let url = first.db.url().to_owned();
    let second = spawn_with(|vars| {
        vars.with("DATABASE_URL", url)
            .with("SHOP_ADMIN_EMAIL", "boss@shop.test")
            .with("SHOP_ADMIN_PASSWORD", "the-operators-password")
    })
    .await;
    assert_eq!(second.refresh(refresh).await.status(), 401, "the squatter's refresh token is revoked");
    assert_eq!(second.login("boss@shop.test", "squatter-password").await.status(), 401, "its password is replaced");
    let admin = second.login("boss@shop.test", "the-operators-password").await;
    assert_eq!(admin.status(), 200);
    let admin: Value = admin.json().await.unwrap();
    let me = second
        .client
        .get(second.server.url("/v1/users/me"))
        .bearer_auth(admin["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.json::<Value>().await.unwrap()["role"], "admin");
}

/// Answers carrying tokens are never cached (RFC 6749 §5.1), refusals included.
#[tokio::test]
async fn token_answers_are_not_cached() {
    let app = spawn_app().await;
    app.customer("ada@example.com").await;
    let login = app.login("ada@example.com", "password-123").await;
    assert_eq!(login.status(), 200);
    assert_eq!(
        (login.headers()["cache-control"].to_str().unwrap(), login.headers()["pragma"].to_str().unwrap()),
        ("no-store", "no-cache")
    );
    let tokens: Value = login.json().await.unwrap();
    let refreshed = app.refresh(tokens["refresh_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(refreshed.status(), 200);
    assert_eq!(refreshed.headers()["cache-control"], "no-store");
    let refused = app.login("ada@example.com", "wrong-password").await;
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["cache-control"], "no-store");
}

/// Two replicas mid-rotation (docs/runbook.md): one still signs with the old key and
/// publishes the new one, the other signs with the new key and still publishes the old one.
/// Each accepts the other's tokens, both JWKS list both keys (the signing one first), and a
/// refresh token from one renews at the other: no 401 during the rollout.
#[tokio::test]
async fn replicas_on_either_side_of_a_key_rotation_accept_each_others_tokens() {
    let (old, old_pem) = SigningKey::generate().unwrap();
    let (new, new_pem) = SigningKey::generate().unwrap();
    let before = spawn_with(|vars| vars.with("JWT_SIGNING_KEY", format!("{old_pem}\n{new_pem}"))).await;
    let url = before.db.url().to_owned();
    let after =
        spawn_with(|vars| vars.with("DATABASE_URL", url).with("JWT_SIGNING_KEY", format!("{new_pem}\n{old_pem}")))
            .await;
    for (app, first) in [(&before, old.kid()), (&after, new.kid())] {
        let jwks: Value = app.client.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
        let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|key| key["kid"].as_str().unwrap()).collect();
        assert_eq!(kids.len(), 2, "{jwks}");
        assert_eq!(kids[0], first, "the signing key is listed first");
    }
    let (_, from_before) = before.customer("ada@example.com").await;
    let from_after: TokenResponse = after.login("ada@example.com", "password-123").await.json().await.unwrap();
    let kid = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    assert_eq!(kid(&from_before.access_token), old.kid());
    assert_eq!(kid(&from_after.access_token), new.kid());
    for app in [&before, &after] {
        for token in [&from_before.access_token, &from_after.access_token] {
            assert_eq!(app.get_with_token("/v1/users/me", token).await.status(), StatusCode::OK);
        }
    }
    let renewed: TokenResponse = after.refresh(from_before.refresh_token).await.json().await.unwrap();
    assert_eq!(kid(&renewed.access_token), new.kid(), "renewed by the new key");
    assert_eq!(before.get_with_token("/v1/users/me", &renewed.access_token).await.status(), StatusCode::OK);
}
