//! `shop.notification.v1.NotificationService`: notifications read over gRPC, with REST's
//! authorization (a customer sees their own, an admin anyone's).

use shop_kit::{
    api::{decode_cursor, encode_cursor, page_limit},
    auth::grpc_caller,
};
use shop_proto::{
    shop::{
        common::v1::PageInfo,
        notification::v1::{self as pb, notification_service_server::NotificationService},
    },
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
        let page = request.page.unwrap_or_default();
        let limit = page_limit((page.limit != 0).then_some(i64::from(page.limit))).map_err(Error::from)?;
        let before: Option<Uuid> =
            (!page.cursor.is_empty()).then(|| decode_cursor(&page.cursor)).transpose().map_err(Error::from)?;
        let mut connection = self.state.pool().acquire().await.map_err(Error::from)?;
        let (notifications, next) = store::page_for_user(&mut connection, user_id, before, limit).await?;
        Ok(Response::new(pb::ListUserNotificationsResponse {
            notifications: notifications.into_iter().map(to_proto).collect(),
            page: Some(PageInfo { next_cursor: next.as_ref().map(encode_cursor).unwrap_or_default() }),
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
