//! `shop.user.v1.UserService`: a thin adapter over the store. Calls are authenticated by
//! [`shop_kit::auth::GrpcAuth`]; a customer may read only their own account.

use shop_kit::auth::{Role, grpc_caller};
use shop_proto::shop::user::v1::{self as pb, user_service_server::UserService};
use shop_proto::time::timestamp;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    app::AppState,
    error::Error,
    store::{self, User},
};

pub struct UserGrpc {
    state: AppState,
}

impl UserGrpc {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    async fn load(&self, id: Uuid) -> Result<Response<pb::GetUserResponse>, Status> {
        let mut connection = self.state.pool().acquire().await.map_err(Error::from)?;
        let user = store::users::by_id(&mut connection, id).await?.ok_or(Error::UserNotFound)?;
        Ok(Response::new(pb::GetUserResponse { user: Some(to_proto(user)) }))
    }
}

#[tonic::async_trait]
impl UserService for UserGrpc {
    #[tracing::instrument(skip_all, fields(user.id))]
    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<pb::GetUserResponse>, Status> {
        let caller = grpc_caller(&request)?;
        let id =
            Uuid::parse_str(&request.get_ref().user_id).map_err(|_| Error::invalid("user_id", "must be a UUID"))?;
        tracing::Span::current().record("user.id", tracing::field::display(id));
        caller.require_owner_or_admin(id).map_err(Error::from)?;
        self.load(id).await
    }

    #[tracing::instrument(skip_all)]
    async fn get_me(&self, request: Request<pb::GetMeRequest>) -> Result<Response<pb::GetUserResponse>, Status> {
        let caller = grpc_caller(&request)?;
        self.load(caller.user_id).await
    }
}

fn to_proto(user: User) -> pb::User {
    let role = match user.role {
        Role::Customer => pb::Role::Customer,
        Role::Admin => pb::Role::Admin,
    };
    pb::User {
        id: user.id.to_string(),
        email: user.email,
        name: user.name,
        role: role.into(),
        created_at: Some(timestamp(user.created_at)),
        updated_at: Some(timestamp(user.updated_at)),
    }
}
