use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_EMAIL, assert_problem, spawn_app, spawn_with};

#[tokio::test]
async fn register_creates_a_customer_once_per_email() {
    let app = spawn_app().await;
    let response = app.register("Ada@Example.com", "password-123", "  Ada Lovelace ").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let user: Value = response.json().await.unwrap();
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["name"], "Ada Lovelace");
    assert_eq!(user["role"], "customer");
    assert!(user.get("password_hash").is_none());
    assert_eq!(location, format!("/v1/users/{}", user["id"].as_str().unwrap()));
    let id = uuid::Uuid::parse_str(user["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 7);

    for (case, email) in
        [("same", "ada@example.com"), ("other case", "ADA@example.COM"), ("spaces", " ada@example.com ")]
    {
        let again = app.register(email, "another-password", "Someone").await;
        assert_problem(again, 409, "email_taken", case).await;
    }
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE email = 'ada@example.com'")
        .fetch_one(&sqlx::PgPool::connect(app.db.url()).await.unwrap())
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
}

#[tokio::test]
async fn every_bad_registration_is_a_clear_4xx_naming_the_field() {
    let app = spawn_app().await;
    let long_email = format!("{}@example.com", "a".repeat(243));
    assert_eq!(long_email.len(), 255);
    let ok_email_254 = format!("{}@{}.{}.{}.com", "a".repeat(60), "b".repeat(63), "c".repeat(63), "d".repeat(61));
    assert_eq!(ok_email_254.len(), 254);
    let cases: Vec<(&str, Value, u16, &str, Option<&str>)> = vec![
        (
            "email 255 chars",
            json!({"email": long_email, "password": "password-1", "name": "A"}),
            422,
            "validation_failed",
            Some("email"),
        ),
        (
            "email malformed",
            json!({"email": "not-an-email", "password": "password-1", "name": "A"}),
            422,
            "validation_failed",
            Some("email"),
        ),
        (
            "email empty",
            json!({"email": "", "password": "password-1", "name": "A"}),
            422,
            "validation_failed",
            Some("email"),
        ),
        (
            "password 7",
            json!({"email": "a@b.co", "password": "1234567", "name": "A"}),
            422,
            "validation_failed",
            Some("password"),
        ),
        (
            "password 129",
            json!({"email": "a@b.co", "password": "x".repeat(129), "name": "A"}),
            422,
            "validation_failed",
            Some("password"),
        ),
        (
            "name empty",
            json!({"email": "a@b.co", "password": "password-1", "name": "  "}),
            422,
            "validation_failed",
            Some("name"),
        ),
        (
            "name 101",
            json!({"email": "a@b.co", "password": "password-1", "name": "n".repeat(101)}),
            422,
            "validation_failed",
            Some("name"),
        ),
        (
            "name control",
            json!({"email": "a@b.co", "password": "password-1", "name": "a\u{7}b"}),
            422,
            "validation_failed",
            Some("name"),
        ),
        ("missing name", json!({"email": "a@b.co", "password": "password-1"}), 422, "validation_failed", Some("name")),
        (
            "wrong type",
            json!({"email": 42, "password": "password-1", "name": "A"}),
            422,
            "validation_failed",
            Some("email"),
        ),
        (
            "role smuggled",
            json!({"email": "a@b.co", "password": "password-1", "name": "A", "role": "admin"}),
            422,
            "validation_failed",
            Some("role"),
        ),
        ("not an object", json!(["a"]), 422, "validation_failed", None),
        (
            "254-char email is fine",
            json!({"email": ok_email_254, "password": "x".repeat(128), "name": "n".repeat(100)}),
            201,
            "",
            None,
        ),
    ];
    for (case, body, status, code, field) in cases {
        let response = app.post("/v1/users", &body).await;
        if status == 201 {
            assert_eq!(response.status().as_u16(), 201, "case {case}");
            continue;
        }
        let problem = assert_problem(response, status, code, case).await;
        if let Some(field) = field {
            let fields: Vec<&str> =
                problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
            assert!(fields.contains(&field), "case {case}: {problem}");
        }
    }

    // Several bad fields are reported together.
    let response = app.post("/v1/users", &json!({"email": "x", "password": "short", "name": ""})).await;
    let problem = assert_problem(response, 422, "validation_failed", "all bad").await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 3, "{problem}");

    let raw = |body: &'static str, content_type: &'static str| {
        app.client.post(app.url("/v1/users")).header("content-type", content_type).body(body).send()
    };
    assert_problem(raw("{\"email\":", "application/json").await.unwrap(), 400, "malformed_json", "truncated").await;
    assert_problem(raw("", "application/json").await.unwrap(), 400, "malformed_json", "empty body").await;
    assert_problem(raw("{}", "text/plain").await.unwrap(), 415, "unsupported_media_type", "text/plain").await;
    let huge = format!(r#"{{"email":"a@b.co","password":"password-1","name":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let response = app
        .client
        .post(app.url("/v1/users"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_problem(response, 413, "payload_too_large", "2 MiB body").await;
}

#[tokio::test]
async fn me_reads_and_changes_the_callers_account() {
    let app = spawn_app().await;
    let (id, tokens) = app.customer("grace@example.com").await;
    let me: Value = app.get_with_token("/v1/users/me", &tokens.access_token).await.json().await.unwrap();
    assert_eq!(me["id"], id.as_str());
    assert_eq!(me["email"], "grace@example.com");

    let patch =
        |body: Value| app.client.patch(app.url("/v1/users/me")).bearer_auth(&tokens.access_token).json(&body).send();
    let renamed: Value = patch(json!({"name": "Grace Hopper"})).await.unwrap().json().await.unwrap();
    assert_eq!(renamed["name"], "Grace Hopper");
    assert!(renamed["updated_at"].as_str().unwrap() >= me["updated_at"].as_str().unwrap());

    // A PATCH that changes nothing answers the account as it is (absent and null alike).
    for body in [json!({}), json!({"name": null, "password": null})] {
        let unchanged: Value = patch(body).await.unwrap().json().await.unwrap();
        assert_eq!(unchanged["name"], "Grace Hopper");
        assert_eq!(unchanged["updated_at"], renamed["updated_at"]);
    }
    let cases: Vec<(&str, Value, &str)> = vec![
        ("empty name", json!({"name": ""}), "name"),
        ("spaces only", json!({"name": "   "}), "name"),
        ("name over 100 with the spaces", json!({"name": format!(" {} ", "n".repeat(99))}), "name"),
        ("short password", json!({"password": "short", "current_password": "password-123"}), "password"),
        ("email not changeable", json!({"email": "x@y.z"}), "email"),
    ];
    for (case, body, field) in cases {
        let problem = assert_problem(patch(body).await.unwrap(), 422, "validation_failed", case).await;
        assert_eq!(problem["errors"][0]["field"], field, "case {case}: {problem}");
    }
    // A new password needs the current one: a re-authentication that failed, not a bad field.
    for (case, body) in [
        ("password without current", json!({"password": "new-password-1"})),
        ("wrong current", json!({"password": "new-password-1", "current_password": "wrong-password"})),
    ] {
        assert_problem(patch(body).await.unwrap(), 403, "current_password_mismatch", case).await;
    }

    let changed = patch(json!({"password": "new-password-1", "current_password": "password-123"})).await.unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_problem(app.login("grace@example.com", "password-123").await, 401, "invalid_credentials", "old password")
        .await;
    assert_eq!(app.login("grace@example.com", "new-password-1").await.status(), StatusCode::OK);
    // A password change signs out every other session.
    let refreshed = app.post("/v1/auth/refresh", &json!({"refresh_token": tokens.refresh_token})).await;
    assert_problem(refreshed, 401, "invalid_refresh_token", "refresh after password change").await;
}

#[tokio::test]
async fn users_see_only_themselves_and_admins_see_everyone() {
    let app = spawn_app().await;
    let (ada, ada_tokens) = app.customer("ada@example.com").await;
    let (bob, _) = app.customer("bob@example.com").await;
    let admin = app.admin().await;

    let own = app.get_with_token(&format!("/v1/users/{ada}"), &ada_tokens.access_token).await;
    assert_eq!(own.status(), StatusCode::OK);
    let other = app.get_with_token(&format!("/v1/users/{bob}"), &ada_tokens.access_token).await;
    assert_problem(other, 403, "forbidden", "customer reads another").await;
    let by_admin: Value =
        app.get_with_token(&format!("/v1/users/{bob}"), &admin.access_token).await.json().await.unwrap();
    assert_eq!(by_admin["email"], "bob@example.com");
    let admin_me: Value = app.get_with_token("/v1/users/me", &admin.access_token).await.json().await.unwrap();
    assert_eq!(admin_me["role"], "admin");
    assert_eq!(admin_me["email"], ADMIN_EMAIL);

    let missing = app.get_with_token(&format!("/v1/users/{}", uuid::Uuid::now_v7()), &admin.access_token).await;
    assert_problem(missing, 404, "user_not_found", "unknown id").await;
    let garbage = app.get_with_token("/v1/users/not-a-uuid", &admin.access_token).await;
    assert_problem(garbage, 404, "user_not_found", "malformed id").await;
    let anonymous = app.client.get(app.url(&format!("/v1/users/{ada}"))).send().await.unwrap();
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    assert_problem(anonymous, 401, "unauthenticated", "no token").await;
}

/// `RATE_LIMIT_REGISTER` per client address, counted once across replicas (two apps on one
/// database and one Redis); refused registrations create nothing.
#[tokio::test]
async fn registrations_per_client_are_limited_across_replicas() {
    let first = spawn_with(|vars| vars.with("RATE_LIMIT_REGISTER", "3/1h")).await;
    let (url, prefix) = (first.db.url().to_owned(), first.redis_prefix.clone());
    let second = spawn_with(|vars| {
        vars.with("DATABASE_URL", url).with("REDIS_KEY_PREFIX", prefix).with("RATE_LIMIT_REGISTER", "3/1h")
    })
    .await;
    for (app, email) in [(&first, "a@example.com"), (&second, "b@example.com"), (&first, "c@example.com")] {
        assert_eq!(app.register(email, "password-123", "A").await.status(), 201, "{email}");
    }
    let limited = second.register("d@example.com", "password-123", "D").await;
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1000..=1200).contains(&retry_after), "one registration every 20 min: {retry_after}");
    assert_problem(limited, 429, "rate_limited", "fourth from one address over two replicas").await;
    // Invalid requests are refused before the limit and do not use it up.
    let invalid = first.register("not-an-email", "password-123", "E").await;
    assert_problem(invalid, 422, "validation_failed", "invalid while limited").await;
    assert_eq!(first.login("d@example.com", "password-123").await.status(), 401, "the refused account does not exist");
}

/// `RATE_LIMIT_PASSWORD_CHANGE` per account: guessing the current password with a stolen
/// access token stops after a few tries.
#[tokio::test]
async fn password_changes_per_account_are_limited() {
    let app = spawn_with(|vars| vars.with("RATE_LIMIT_PASSWORD_CHANGE", "2/15m")).await;
    let (_, tokens) = app.customer("ada@example.com").await;
    let change = |current: &'static str| {
        app.client
            .patch(app.url("/v1/users/me"))
            .bearer_auth(&tokens.access_token)
            .json(&json!({"password": "new-password-1", "current_password": current}))
            .send()
    };
    for guess in ["guess-1", "guess-2"] {
        assert_problem(change(guess).await.unwrap(), 403, "current_password_mismatch", guess).await;
    }
    let limited = change("password-123").await.unwrap();
    assert!(limited.headers().contains_key("retry-after"));
    assert_problem(limited, 429, "rate_limited", "third change").await;
    // Renaming is not a password change and is not limited.
    let rename =
        app.client.patch(app.url("/v1/users/me")).bearer_auth(&tokens.access_token).json(&json!({"name": "Ada"}));
    assert_eq!(rename.send().await.unwrap().status(), 200);
}
