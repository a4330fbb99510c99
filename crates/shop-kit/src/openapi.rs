//! The OpenAPI documents: generated from the routes, with the answers every route shares.
//!
//! Each service builds its REST API as a `utoipa_axum::router::OpenApiRouter`, one
//! `routes!(handler, ...)` per path, so a route cannot exist without its operation in the
//! document nor the other way round ([`split`] takes the router and the document apart).
//! What a handler's `#[utoipa::path]` declares is its own answers; [`Conventions`] adds what
//! the platform answers for any route of that shape, so no handler has to repeat it:
//!
//! | the operation has        | answers added                                                      |
//! |--------------------------|--------------------------------------------------------------------|
//! | a JSON request body      | 400 `malformed_json`, 413 `payload_too_large`, 415 `unsupported_media_type`, 422 `validation_failed` |
//! | query or header parameters | 400 (`bad_query`, `invalid_cursor`), 422 `validation_failed`    |
//! | a path parameter         | 404 (an id that is not a UUID names no resource)                    |
//! | `bearer` security        | 401 `unauthenticated` with `WWW-Authenticate: Bearer`               |
//! | anything                 | 503 (`request_timeout`, `database_unavailable`, `cache_unavailable`, a dependency down) |
//!
//! Every problem answer is `application/problem+json` with the [`Problem`] schema, and every
//! 429 declares its `Retry-After` header.

use utoipa::openapi::{
    Components, ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder,
    header::HeaderBuilder,
    path::{Operation, ParameterIn},
    schema::{ObjectBuilder, Type},
};

use crate::error::{FieldError, PROBLEM_JSON, Problem};

/// Splits a service's [`OpenApiRouter`](utoipa_axum::router::OpenApiRouter) into the axum
/// router it serves and its finished document: the shared answers ([`Conventions`]) and the
/// `bearer` scheme ([`BearerAuth`]) added.
pub fn split<S>(router: utoipa_axum::router::OpenApiRouter<S>) -> (axum::Router<S>, OpenApi)
where
    S: Send + Sync + Clone + 'static,
{
    let (router, mut document) = router.split_for_parts();
    finish(&mut document);
    (router, document)
}

/// Adds the shared answers and schemes to a document made another way.
pub fn finish(document: &mut OpenApi) {
    use utoipa::Modify as _;
    BearerAuth.modify(document);
    Conventions.modify(document);
}

/// The `bearer` (JWT) security scheme the services use.
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// The answers every route of a shape shares (see the module's table).
pub struct Conventions;

impl utoipa::Modify for Conventions {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Components::new);
        for (name, schema) in [
            ("Problem", <Problem as utoipa::PartialSchema>::schema()),
            ("FieldError", <FieldError as utoipa::PartialSchema>::schema()),
        ] {
            components.schemas.entry(name.to_owned()).or_insert(schema);
        }
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                add_shared_answers(operation);
            }
        }
    }
}

fn add_shared_answers(operation: &mut Operation) {
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    let located = |place: ParameterIn| parameters.iter().any(|parameter| parameter.parameter_in == place);
    let has_path = located(ParameterIn::Path);
    let has_query = located(ParameterIn::Query) || located(ParameterIn::Header);
    let has_body = operation.request_body.is_some();
    let secured = operation.security.as_ref().is_some_and(|requirements| {
        requirements
            .iter()
            .any(|requirement| serde_json::to_value(requirement).is_ok_and(|value| value != serde_json::json!({})))
    });
    let mut wanted: Vec<(&str, &str)> = Vec::new();
    if has_body {
        wanted.extend([
            ("400", "malformed_json: the body is not JSON"),
            ("413", "payload_too_large: the body is over the service's limit (BODY_LIMIT_BYTES, 64 KiB by default)"),
            ("415", "unsupported_media_type: the body is not sent as application/json"),
            ("422", "validation_failed: `errors` names each field that is missing, of the wrong type or out of range"),
        ]);
    }
    if has_query {
        wanted.extend([
            (
                "400",
                "bad_query or invalid_cursor: the query cannot be read, or the cursor is not one this API returned",
            ),
            ("422", "validation_failed: `errors` names each parameter out of range"),
        ]);
    }
    if has_path {
        wanted.push(("404", "no resource has this id (an id that is not a UUID names none)"));
    }
    if secured {
        wanted.push(("401", "unauthenticated: no bearer token, or one that does not verify or has expired"));
    }
    wanted.push((
        "503",
        "request_timeout, database_unavailable, cache_unavailable or a dependency unavailable: nothing was changed; retry shortly",
    ));
    let mut merged: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
    for (status, description) in wanted {
        merged.entry(status).or_default().push(description);
    }
    let responses = &mut operation.responses.responses;
    for (status, descriptions) in merged {
        responses.entry(status.to_owned()).or_insert_with(|| problem(status, &descriptions.join("; ")));
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else { continue };
        let header = match status.as_str() {
            "429" => "Retry-After",
            "401" => "WWW-Authenticate",
            _ => continue,
        };
        if !response.headers.contains_key(header) {
            let (kind, description) = match header {
                "Retry-After" => (Type::Integer, "seconds until a retry may succeed"),
                _ => (Type::String, "`Bearer`"),
            };
            response.headers.insert(
                header.to_owned(),
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(kind).build())
                    .description(Some(description))
                    .build(),
            );
        }
    }
}

fn problem(status: &str, description: &str) -> RefOr<utoipa::openapi::Response> {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
    let mut response = ResponseBuilder::new().description(description).content(PROBLEM_JSON, content);
    if status == "401" {
        response = response.header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String).build())
                .description(Some("`Bearer`"))
                .build(),
        );
    }
    RefOr::T(response.build())
}

#[cfg(test)]
mod tests {
    use axum::Json;
    use utoipa_axum::{router::OpenApiRouter, routes};

    use super::*;

    #[derive(serde::Deserialize, utoipa::ToSchema)]
    struct Body {
        #[expect(dead_code, reason = "read by the schema only")]
        name: String,
    }

    /// Makes one.
    #[utoipa::path(post, path = "/v1/things/{id}", security(("bearer" = [])), params(("id" = uuid::Uuid, Path)),
        request_body = Body, responses((status = 201), (status = 429, description = "rate_limited")))]
    async fn make(Json(_): Json<Body>) -> axum::http::StatusCode {
        axum::http::StatusCode::CREATED
    }

    /// Lists them.
    #[utoipa::path(get, path = "/v1/things", responses((status = 200)))]
    async fn list() {}

    #[test]
    fn a_route_gets_the_answers_of_its_shape() {
        let (_router, document) = split(OpenApiRouter::<()>::new().routes(routes!(make)).routes(routes!(list)));
        let json = serde_json::to_value(&document).unwrap();
        let make = &json["paths"]["/v1/things/{id}"]["post"]["responses"];
        for status in ["201", "400", "401", "404", "413", "415", "422", "429", "503"] {
            assert!(make.get(status).is_some(), "POST lacks {status}: {make}");
        }
        assert_eq!(make["422"]["content"][PROBLEM_JSON]["schema"]["$ref"], "#/components/schemas/Problem");
        assert_eq!(make["429"]["headers"]["Retry-After"]["schema"]["type"], "integer");
        assert!(make["401"]["headers"]["WWW-Authenticate"].is_object());
        let list = &json["paths"]["/v1/things"]["get"]["responses"];
        let statuses: Vec<&String> = list.as_object().unwrap().keys().collect();
        assert_eq!(statuses, ["200", "503"], "a plain read gets only 503: {list}");
        assert!(json["components"]["schemas"]["Problem"].is_object());
        assert_eq!(json["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    }
}
