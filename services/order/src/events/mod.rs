//! Order events: every event order-service publishes is built here from the domain
//! [`Order`], and [`payments`] is what payment events do to orders.

pub mod payments;

use shop_proto::{shop::events::v1 as events, time::timestamp};

use crate::domain::Order;

/// The lines of an order as events carry them.
fn lines(order: &Order) -> Vec<events::OrderLine> {
    order
        .lines
        .iter()
        .map(|line| events::OrderLine {
            product_id: line.product_id.to_string(),
            name: line.name.clone(),
            quantity: i64::from(line.quantity),
            unit_price: Some(line.unit_price().into()),
        })
        .collect()
}

/// `OrderPlaced`: the order is waiting for its payment with `card_token`.
pub fn placed(order: &Order, card_token: &str) -> events::OrderPlaced {
    events::OrderPlaced {
        order_id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        lines: lines(order),
        total: Some(order.total().into()),
        card_token: card_token.to_owned(),
    }
}

/// `OrderConfirmed`: paid; the held stock is sold.
pub fn confirmed(order: &Order) -> events::OrderConfirmed {
    events::OrderConfirmed {
        order_id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        lines: lines(order),
        total: Some(order.total().into()),
    }
}

/// `OrderCancelled`: with `refund` when the order had been paid.
pub fn cancelled(order: &Order, reason: &str, refund: bool) -> events::OrderCancelled {
    events::OrderCancelled {
        order_id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        lines: lines(order),
        total: Some(order.total().into()),
        reason: reason.to_owned(),
        refund,
    }
}

/// `OrderShipped`: how the order travels.
pub fn shipped(order: &Order) -> events::OrderShipped {
    let shipment = order.shipment.as_ref();
    events::OrderShipped {
        order_id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        carrier: shipment.map(|shipment| shipment.carrier.clone()).unwrap_or_default(),
        tracking_number: shipment.map(|shipment| shipment.tracking_number.clone()).unwrap_or_default(),
        shipped_at: shipment.map(|shipment| timestamp(shipment.shipped_at)),
    }
}

/// `OrderDelivered`: the customer has it.
pub fn delivered(order: &Order) -> events::OrderDelivered {
    events::OrderDelivered {
        order_id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        delivered_at: order.delivered_at.map(timestamp),
    }
}
