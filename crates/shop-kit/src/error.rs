//! Errors at the edge: one [`Problem`] shape for both transports.
//!
//! Each service has its own `thiserror` error enum and one function that turns a variant
//! into a [`Problem`]. The [`Problem`] knows both answers: RFC 9457 `application/problem+json`
//! for REST and a `tonic::Status` for gRPC, so the two transports can never disagree.
//!
//! When to use what:
//! - `400 bad_request`: the request cannot be read (malformed JSON, bad header).
//! - `401 unauthenticated`: no token, or a token that does not verify.
//! - `403 forbidden`: a valid caller asking for what is not theirs.
//! - `404 not_found`, `409` conflicts (duplicates, illegal state changes), `422` validation
//!   (with the failing fields in `errors`), `429` rate limited (with `Retry-After`).
//! - `500 internal`: our fault. The body says nothing more; the cause is logged once, here.

use axum::{
    Json,
    extract::{FromRequest, Request, rejection::BytesRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};
use utoipa::ToSchema;

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One failing field of a request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field, as a dotted path (`shipping_address.country`).
    pub field: String,
    /// What is wrong with it, for a person.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// An RFC 9457 problem: the answer to every request that did not succeed.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:shop:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the kind of problem (the HTTP reason phrase).
    pub title: &'static str,
    /// The HTTP status code.
    pub status: u16,
    /// What happened, for a person.
    pub detail: String,
    /// A stable snake_case identifier of the problem, for programs.
    pub code: &'static str,
    /// The failing fields, on validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds until a retry may succeed (sent as `Retry-After`).
    #[serde(skip)]
    pub retry_after_secs: Option<u32>,
}

impl Problem {
    /// A problem with this status, stable code and detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            problem_type: format!("urn:shop:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            code,
            errors: Vec::new(),
            retry_after_secs: None,
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    /// A 422 naming the failing fields.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
        let detail = format!("invalid value for: {}", fields.join(", "));
        Self { errors, ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", detail) }
    }

    /// A 429 with `Retry-After`.
    pub fn rate_limited(retry_after_secs: u32) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many attempts; retry later")
        }
    }

    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
    }

    /// A 500 whose body says nothing about the cause. The cause chain is logged here, once.
    /// When the cause is the service's own database or Redis being unreachable (not a bug),
    /// it is a 503 `database_unavailable` or `cache_unavailable` instead: the client may
    /// retry, and nothing was changed.
    pub fn internal(cause: &anyhow::Error) -> Self {
        if let Some(code) = unreachable_dependency(cause) {
            tracing::warn!(error = format!("{cause:#}"), code, "request failed: a dependency is unreachable");
            return Self::unavailable(code, "a dependency of this service is unreachable; retry shortly");
        }
        tracing::error!(error = format!("{cause:#}"), "request failed with an internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "an internal error occurred")
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The gRPC code of this problem: the one place HTTP statuses meet gRPC codes.
    pub fn grpc_code(&self) -> tonic::Code {
        match self.status {
            400 | 413 | 422 => tonic::Code::InvalidArgument,
            401 => tonic::Code::Unauthenticated,
            403 => tonic::Code::PermissionDenied,
            404 => tonic::Code::NotFound,
            409 if self.code.ends_with("_taken") || self.code.starts_with("duplicate") => tonic::Code::AlreadyExists,
            409 => tonic::Code::FailedPrecondition,
            408 | 504 => tonic::Code::DeadlineExceeded,
            429 => tonic::Code::ResourceExhausted,
            503 => tonic::Code::Unavailable,
            _ => tonic::Code::Internal,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry_after = self.retry_after_secs;
        let mut response = (status, Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// `database_unavailable` or `cache_unavailable` when `cause` is a connection to Postgres or
/// Redis that failed (refused, dropped, timed out, no pooled connection in time); `None` for
/// anything else (a query error is a bug, not an outage).
fn unreachable_dependency(cause: &anyhow::Error) -> Option<&'static str> {
    cause.chain().find_map(|error| {
        if let Some(error) = error.downcast_ref::<sqlx::Error>() {
            return matches!(error, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_))
                .then_some("database_unavailable");
        }
        let error = error.downcast_ref::<redis::RedisError>()?;
        (error.is_io_error() || error.is_connection_refusal() || error.is_timeout() || error.is_connection_dropped())
            .then_some("cache_unavailable")
    })
}

impl From<Problem> for tonic::Status {
    fn from(problem: Problem) -> Self {
        let mut message = format!("{}: {}", problem.code, problem.detail);
        for error in &problem.errors {
            message.push_str(&format!("; {}: {}", error.field, error.message));
        }
        let mut status = tonic::Status::new(problem.grpc_code(), message);
        if let Ok(code) = tonic::metadata::MetadataValue::try_from(problem.code) {
            status.metadata_mut().insert("shop-error-code", code);
        }
        if let Some(seconds) = problem.retry_after_secs
            && let Ok(value) = seconds.to_string().parse()
        {
            status.metadata_mut().insert("retry-after", value);
        }
        status
    }
}

/// A JSON body extractor that answers bad input with a [`Problem`]: 415 without a JSON
/// content type, 413 over the body limit, 400 for malformed JSON, 422 naming the field
/// whose value has the wrong type or is missing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .map(str::trim)
            .is_some_and(|mime| mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json"));
        if !is_json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a body with Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state).await.map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(_) => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than this service accepts",
            ),
            other => Problem::bad_request("bad_request", other.body_text()),
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a resource id from a path segment: 404 for anything that is not a UUID, since
/// no such resource can exist.
pub fn parse_id(segment: &str, code: &'static str) -> Result<uuid::Uuid, Problem> {
    uuid::Uuid::parse_str(segment).map_err(|_| Problem::not_found(code, "no resource has this id"))
}

/// Parses a JSON document into `T`, answering as [`ApiJson`] does.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|error| json_problem(&error.path().to_string(), error.inner()))?;
    deserializer.end().map_err(|error| json_problem(".", &error))?;
    Ok(value)
}

fn json_problem(path: &str, error: &serde_json::Error) -> Problem {
    if error.classify() != serde_json::error::Category::Data {
        return Problem::bad_request("malformed_json", format!("the body is not valid JSON: {error}"));
    }
    let message = error.to_string();
    let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
    // serde names an unknown field in the path already, a missing one only in the message.
    let missing = message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next());
    let field = match missing {
        Some(missing) if path == "." => missing.to_owned(),
        Some(missing) => format!("{path}.{missing}"),
        None if path == "." => {
            message.strip_prefix("unknown field `").and_then(|rest| rest.split('`').next()).unwrap_or("body").to_owned()
        }
        None => path.to_owned(),
    };
    Problem::validation(vec![FieldError::new(field, message)])
}

#[cfg(test)]
mod tests {
    use axum::{Router, body::Body, routing::post};
    use http_body_util::BodyExt;
    use serde::Deserialize;
    use tower::ServiceExt;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "read only by the extractor under test")]
    struct Signup {
        email: String,
        age: u8,
        address: Address,
    }

    #[derive(Debug, Deserialize)]
    #[expect(dead_code, reason = "read only by the extractor under test")]
    struct Address {
        city: String,
    }

    async fn call(content_type: Option<&str>, body: &str) -> (StatusCode, serde_json::Value) {
        let app = Router::new()
            .route("/", post(|ApiJson(_): ApiJson<Signup>| async { "ok" }))
            .layer(axum::extract::DefaultBodyLimit::max(256));
        let mut request = Request::post("/");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let response = app.oneshot(request.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
        let status = response.status();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        if status.is_success() {
            return (status, serde_json::Value::Null);
        }
        assert_eq!(content_type.unwrap(), PROBLEM_JSON);
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn bad_bodies_become_problems_naming_the_field() {
        let json = Some("application/json");
        let big = format!(r#"{{"email":"{}","age":1,"address":{{"city":"x"}}}}"#, "a".repeat(400));
        // (case, content type, body, status, code, failing field)
        type Case<'a> = (&'a str, Option<&'a str>, &'a str, u16, &'a str, Option<&'a str>);
        let cases: [Case<'_>; 9] = [
            ("valid", json, r#"{"email":"a","age":1,"address":{"city":"x"}}"#, 200, "", None),
            ("syntax", json, r#"{"email":"#, 400, "malformed_json", None),
            ("trailing", json, r#"{"email":"a","age":1,"address":{"city":"x"}} x"#, 400, "malformed_json", None),
            ("no content type", None, "{}", 415, "unsupported_media_type", None),
            ("missing", json, r#"{"age":1,"address":{"city":"x"}}"#, 422, "validation_failed", Some("email")),
            (
                "wrong type",
                json,
                r#"{"email":"a","age":"old","address":{"city":"x"}}"#,
                422,
                "validation_failed",
                Some("age"),
            ),
            (
                "nested missing",
                json,
                r#"{"email":"a","age":1,"address":{}}"#,
                422,
                "validation_failed",
                Some("address.city"),
            ),
            (
                "unknown",
                json,
                r#"{"email":"a","age":1,"address":{"city":"x"},"role":"admin"}"#,
                422,
                "validation_failed",
                Some("role"),
            ),
            ("too large", json, big.as_str(), 413, "payload_too_large", None),
        ];
        for (name, content_type, body, status, code, field) in cases {
            let (got, problem) = call(content_type, body).await;
            assert_eq!(got.as_u16(), status, "case {name}: {problem}");
            if status == 200 {
                continue;
            }
            assert_eq!(problem["code"], code, "case {name}");
            assert_eq!(problem["status"], status, "case {name}");
            assert_eq!(problem["type"], format!("urn:shop:problem:{code}"), "case {name}");
            if let Some(field) = field {
                assert_eq!(problem["errors"][0]["field"], field, "case {name}: {problem}");
            }
        }
    }

    #[test]
    fn one_mapping_for_both_transports() {
        let cases = [
            (Problem::validation(vec![FieldError::new("email", "too long")]), 422, tonic::Code::InvalidArgument),
            (Problem::unauthenticated("no token"), 401, tonic::Code::Unauthenticated),
            (Problem::forbidden("not yours"), 403, tonic::Code::PermissionDenied),
            (Problem::not_found("user_not_found", "no such user"), 404, tonic::Code::NotFound),
            (Problem::conflict("email_taken", "taken"), 409, tonic::Code::AlreadyExists),
            (Problem::conflict("illegal_transition", "no"), 409, tonic::Code::FailedPrecondition),
            (Problem::rate_limited(7), 429, tonic::Code::ResourceExhausted),
            (Problem::internal(&anyhow::anyhow!("db down")), 500, tonic::Code::Internal),
        ];
        for (problem, status, code) in cases {
            let name = problem.code;
            assert_eq!(problem.status, status, "case {name}");
            let grpc = tonic::Status::from(problem);
            assert_eq!(grpc.code(), code, "case {name}");
            assert_eq!(grpc.metadata().get("shop-error-code").unwrap(), name, "case {name}");
        }
    }

    #[tokio::test]
    async fn internal_errors_hide_their_cause_and_limits_carry_retry_after() {
        let response = Problem::internal(&anyhow::anyhow!("password=hunter2 in SELECT")).into_response();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("hunter2") && !text.contains("SELECT"), "{text}");
        let limited = Problem::rate_limited(30).into_response();
        assert_eq!(limited.headers()[header::RETRY_AFTER], "30");
    }

    #[test]
    fn an_unreachable_database_or_cache_is_a_503_and_a_bug_a_500() {
        let refused = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let cases = [
            (anyhow::Error::new(sqlx::Error::PoolTimedOut).context("database error"), 503, "database_unavailable"),
            (anyhow::Error::new(sqlx::Error::Io(refused())).context("database error"), 503, "database_unavailable"),
            (anyhow::Error::new(redis::RedisError::from(refused())).context("redis error"), 503, "cache_unavailable"),
            (anyhow::Error::new(sqlx::Error::RowNotFound).context("database error"), 500, "internal"),
            (anyhow::anyhow!("a bug"), 500, "internal"),
        ];
        for (cause, status, code) in cases {
            let problem = Problem::internal(&cause);
            assert_eq!((problem.status, problem.code), (status, code), "{cause:#}");
            assert!(!problem.detail.contains("refused"), "the cause stays in the log");
        }
    }
}
