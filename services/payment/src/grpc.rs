//! `shop.payment.v1.PaymentService`: payments read over gRPC, with REST's authorization (a
//! customer sees the payments of their own orders, an admin every payment).

use shop_kit::{
    api::{page_info, page_request},
    auth::grpc_caller,
};
use shop_proto::{
    shop::payment::v1::{self as pb, payment_service_server::PaymentService},
    time::timestamp,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{app::AppState, domain::Payment, error::Error, store};

pub struct PaymentGrpc {
    state: AppState,
}

impl PaymentGrpc {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn uuid(text: &str, field: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(text).map_err(|_| Error::invalid(field, "must be a UUID"))
}

#[tonic::async_trait]
impl PaymentService for PaymentGrpc {
    #[tracing::instrument(skip_all, fields(order.id = %request.get_ref().order_id))]
    async fn get_order_payment(
        &self,
        request: Request<pb::GetOrderPaymentRequest>,
    ) -> Result<Response<pb::GetOrderPaymentResponse>, Status> {
        let caller = grpc_caller(&request)?;
        let order_id = uuid(&request.get_ref().order_id, "order_id")?;
        let owner = (!caller.is_admin()).then_some(caller.user_id);
        let mut connection = self.state.pool().acquire().await.map_err(Error::from)?;
        // Another customer's payment is as absent as REST's filtered list shows it.
        let payment = store::page(&mut connection, owner, Some(order_id), None, 1)
            .await?
            .0
            .into_iter()
            .next()
            .ok_or(Error::PaymentNotFound)?;
        Ok(Response::new(pb::GetOrderPaymentResponse { payment: Some(to_proto(payment)) }))
    }

    #[tracing::instrument(skip_all, fields(user.id = %request.get_ref().user_id))]
    async fn list_user_payments(
        &self,
        request: Request<pb::ListUserPaymentsRequest>,
    ) -> Result<Response<pb::ListUserPaymentsResponse>, Status> {
        let caller = grpc_caller(&request)?;
        let request = request.into_inner();
        let user_id = uuid(&request.user_id, "user_id")?;
        caller.require_owner_or_admin(user_id).map_err(Error::from)?;
        let (limit, before) = page_request::<Uuid>(request.page.as_ref()).map_err(Error::from)?;
        let mut connection = self.state.pool().acquire().await.map_err(Error::from)?;
        let (payments, next) = store::page(&mut connection, Some(user_id), None, before, limit).await?;
        Ok(Response::new(pb::ListUserPaymentsResponse {
            payments: payments.into_iter().map(to_proto).collect(),
            page: Some(page_info(next.as_ref())),
        }))
    }
}

fn to_proto(payment: Payment) -> pb::Payment {
    pb::Payment {
        id: payment.id.to_string(),
        order_id: payment.order_id.to_string(),
        user_id: payment.user_id.to_string(),
        amount: Some(payment.amount().into()),
        status: payment.status.as_str().to_owned(),
        failure_reason: payment.failure_reason.unwrap_or_default(),
        created_at: Some(timestamp(payment.created_at)),
        updated_at: Some(timestamp(payment.updated_at)),
    }
}
