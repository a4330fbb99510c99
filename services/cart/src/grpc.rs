//! `shop.cart.v1.CartService`: internal methods (ADR 0012): the order service reads and clears
//! a buyer's cart with its own service token. Customers use REST (`/v1/cart`).

use shop_kit::auth::grpc_service;
use shop_proto::shop::cart::v1::{self as pb, cart_service_server::CartService};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{app::AppState, error::Error};

pub struct CartGrpc {
    state: AppState,
}

impl CartGrpc {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// Who may read and clear any buyer's cart: the checkout.
const CALLERS: &[&str] = &["order"];

fn owner<T>(request: &Request<T>, user_id: &str) -> Result<Uuid, Status> {
    grpc_service(request, CALLERS)?;
    Uuid::parse_str(user_id).map_err(|_| Error::invalid("user_id", "must be a UUID").into())
}

#[tonic::async_trait]
impl CartService for CartGrpc {
    #[tracing::instrument(skip_all, fields(user.id = %request.get_ref().user_id))]
    async fn get_cart(&self, request: Request<pb::GetCartRequest>) -> Result<Response<pb::GetCartResponse>, Status> {
        let user_id = owner(&request, &request.get_ref().user_id)?;
        let cart = crate::http::view(&self.state, user_id).await?;
        let items = cart
            .items
            .into_iter()
            .map(|item| pb::CartItem {
                product_id: item.product_id.to_string(),
                name: item.name,
                quantity: item.quantity,
                unit_price: Some(item.unit_price.into()),
                line_total: Some(item.line_total.into()),
            })
            .collect();
        Ok(Response::new(pb::GetCartResponse {
            cart: Some(pb::Cart { user_id: user_id.to_string(), items, total: Some(cart.total.into()) }),
        }))
    }

    #[tracing::instrument(skip_all, fields(user.id = %request.get_ref().user_id))]
    async fn clear_cart(
        &self,
        request: Request<pb::ClearCartRequest>,
    ) -> Result<Response<pb::ClearCartResponse>, Status> {
        let user_id = owner(&request, &request.get_ref().user_id)?;
        self.state.store().clear(user_id).await?;
        Ok(Response::new(pb::ClearCartResponse {}))
    }
}
