//! `shop.notification.v1.NotificationService`: notifications read over gRPC, with REST's
//! authorization (a customer sees their own, an admin anyone's).

use shop_kit::{
    api::{page_info, page_request},
    auth::grpc_caller,
};
use shop_proto::{
    shop::notification::v1::{self as pb, notification_service_server::NotificationService},
    time::timestamp,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{app::AppState, domain::Notification, error::Error, store};

pub struct NotificationGrpc {
    state: AppState,
}

impl NotificationGrpc {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl NotificationService for NotificationGrpc {
    #[tracing::instrument(skip_all, fields(user.id = %request.get_ref().user_id))]
    async fn list_user_notifications(
        &self,
        request: Request<pb::ListUserNotificationsRequest>,
    ) -> Result<Response<pb::ListUserNotificationsResponse>, Status> {
        let caller = grpc_caller(&request)?;
        let request = request.into_inner();
        let user_id = Uuid::parse_str(&request.user_id).map_err(|_| Error::invalid("user_id", "must be a UUID"))?;
        caller.require_owner_or_admin(user_id).map_err(Error::from)?;
        let (limit, before) = page_request::<Uuid>(request.page.as_ref()).map_err(Error::from)?;
        let mut connection = self.state.pool().acquire().await.map_err(Error::from)?;
        let (notifications, next) = store::page_for_user(&mut connection, user_id, before, limit).await?;
        Ok(Response::new(pb::ListUserNotificationsResponse {
            notifications: notifications.into_iter().map(to_proto).collect(),
            page: Some(page_info(next.as_ref())),
        }))
    }
}

fn to_proto(notification: Notification) -> pb::Notification {
    pb::Notification {
        id: notification.id.to_string(),
        user_id: notification.user_id.to_string(),
        order_id: notification.order_id.map(|id| id.to_string()).unwrap_or_default(),
        channel: notification.channel.as_str().to_owned(),
        template: notification.template,
        subject: notification.subject,
        body: notification.body,
        status: notification.status.as_str().to_owned(),
        attempts: notification.attempts,
        created_at: Some(timestamp(notification.created_at)),
    }
}
