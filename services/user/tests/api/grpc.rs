use shop_proto::shop::user::v1::{GetMeRequest, GetUserRequest, Role, user_service_client::UserServiceClient};
use tokio_stream::StreamExt as _;
use tonic::{Code, transport::Channel};

use crate::helpers::spawn_app;

async fn channel(app: &crate::helpers::TestApp) -> Channel {
    Channel::from_shared(app.url("")).unwrap().connect().await.unwrap()
}

fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    shop_kit::grpc::with_bearer(tonic::Request::new(message), token)
}

#[tokio::test]
async fn get_user_over_grpc_on_the_rest_port_with_authorization() {
    let app = spawn_app().await;
    let (ada, ada_tokens) = app.customer("ada@example.com").await;
    let (bob, _) = app.customer("bob@example.com").await;
    let admin = app.admin().await;
    let mut client = UserServiceClient::new(channel(&app).await);

    let own =
        client.get_user(authorized(GetUserRequest { user_id: ada.clone() }, &ada_tokens.access_token)).await.unwrap();
    let user = own.into_inner().user.unwrap();
    assert_eq!(user.email, "ada@example.com");
    assert_eq!(user.role(), Role::Customer);
    assert!(user.created_at.is_some());
    let me = client.get_me(authorized(GetMeRequest {}, &admin.access_token)).await.unwrap().into_inner().user.unwrap();
    assert_eq!(me.role(), Role::Admin);
    let by_admin = client.get_user(authorized(GetUserRequest { user_id: bob.clone() }, &admin.access_token)).await;
    assert_eq!(by_admin.unwrap().into_inner().user.unwrap().email, "bob@example.com");

    let cases: Vec<(&str, tonic::Request<GetUserRequest>, Code, &str)> = vec![
        (
            "no token",
            tonic::Request::new(GetUserRequest { user_id: ada.clone() }),
            Code::Unauthenticated,
            "unauthenticated",
        ),
        (
            "bad token",
            authorized(GetUserRequest { user_id: ada.clone() }, "x.y.z"),
            Code::Unauthenticated,
            "unauthenticated",
        ),
        (
            "not yours",
            authorized(GetUserRequest { user_id: bob }, &ada_tokens.access_token),
            Code::PermissionDenied,
            "forbidden",
        ),
        (
            "not a uuid",
            authorized(GetUserRequest { user_id: "nope".into() }, &admin.access_token),
            Code::InvalidArgument,
            "validation_failed",
        ),
        (
            "unknown",
            authorized(GetUserRequest { user_id: uuid::Uuid::now_v7().to_string() }, &admin.access_token),
            Code::NotFound,
            "user_not_found",
        ),
    ];
    for (case, request, code, error_code) in cases {
        let status = client.get_user(request).await.unwrap_err();
        assert_eq!(status.code(), code, "case {case}: {status:?}");
        assert_eq!(status.metadata().get("shop-error-code").unwrap(), error_code, "case {case}");
    }
}

#[tokio::test]
async fn grpc_health_and_both_reflection_versions_answer() {
    let app = spawn_app().await;
    let channel = channel(&app).await;

    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "shop.user.v1.UserService"] {
        let answer = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "service {service:?}");
    }

    {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new(channel.clone());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) = stream.next().await.unwrap().unwrap().message_response
        else {
            panic!("v1 reflection did not list services");
        };
        let names: Vec<_> = list.service.into_iter().map(|service| service.name).collect();
        assert!(names.contains(&"shop.user.v1.UserService".to_owned()), "{names:?}");
        assert!(names.contains(&"grpc.health.v1.Health".to_owned()), "{names:?}");
        assert!(
            !names.iter().any(|name| name.starts_with("shop.product") || name.starts_with("shop.cart")),
            "only the services this server serves are advertised: {names:?}"
        );
    }
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("shop.user.v1.UserService".into())),
        };
        let mut stream = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
        let response = stream.next().await.unwrap().unwrap().message_response;
        assert!(
            matches!(response, Some(MessageResponse::FileDescriptorResponse(ref files)) if !files.file_descriptor_proto.is_empty()),
            "v1alpha reflection did not describe the service: {response:?}"
        );
    }
}

#[tokio::test]
async fn the_callers_trace_continues_over_grpc() {
    let app = spawn_app().await;
    let (_, tokens) = app.customer("ada@example.com").await;
    let mut client = UserServiceClient::new(channel(&app).await);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = authorized(GetMeRequest {}, &tokens.access_token);
    request.metadata_mut().insert("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01").parse().unwrap());
    let response = client.get_me(request).await.unwrap();
    assert_eq!(response.metadata().get("x-trace-id").unwrap(), trace_id);
}
