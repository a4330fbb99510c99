//! Pure rules: a payment, its status, and what a charge outcome makes of it.

use chrono::{DateTime, Utc};
use shop_kit::api::Money;
use uuid::Uuid;

use crate::provider::Charge;

/// Where a payment is: taken, declined, or given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentStatus {
    Succeeded,
    Failed,
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            "refunded" => Some(Self::Refunded),
            _ => None,
        }
    }

    /// The status a charge outcome leaves a new payment in, and why it failed if it did.
    pub fn of_charge(outcome: &Charge) -> (Self, Option<String>) {
        match outcome {
            Charge::Succeeded => (Self::Succeeded, None),
            Charge::Declined { reason } => (Self::Failed, Some(reason.clone())),
        }
    }
}

/// The one payment of an order, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub status: PaymentStatus,
    /// Why a failed payment failed (a stable code such as `card_declined`).
    pub failure_reason: Option<String>,
    /// Charge attempts made (transient failures are retried).
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Payment {
    pub fn amount(&self) -> Money {
        Money { amount: self.amount, currency: self.currency.clone() }
    }
}

/// A payment about to be stored: its timestamps are the database's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPayment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub status: PaymentStatus,
    pub failure_reason: Option<String>,
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_text() {
        for status in [PaymentStatus::Succeeded, PaymentStatus::Failed, PaymentStatus::Refunded] {
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(
            [PaymentStatus::Succeeded, PaymentStatus::Failed, PaymentStatus::Refunded].map(PaymentStatus::as_str),
            ["succeeded", "failed", "refunded"],
            "the texts are the stored values and the REST values"
        );
        for unknown in ["", "Succeeded", "pending", "refunded "] {
            assert_eq!(PaymentStatus::parse(unknown), None, "{unknown:?}");
        }
    }

    #[test]
    fn charge_outcomes_become_statuses() {
        assert_eq!(PaymentStatus::of_charge(&Charge::Succeeded), (PaymentStatus::Succeeded, None));
        let declined = Charge::Declined { reason: "card_declined".into() };
        assert_eq!(PaymentStatus::of_charge(&declined), (PaymentStatus::Failed, Some("card_declined".into())));
    }

    #[test]
    fn the_amount_is_money() {
        let now = Utc::now();
        let payment = Payment {
            id: Uuid::now_v7(),
            order_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            amount: 4999,
            currency: "USD".into(),
            status: PaymentStatus::Succeeded,
            failure_reason: None,
            attempts: 1,
            created_at: now,
            updated_at: now,
        };
        assert_eq!(payment.amount(), Money { amount: 4999, currency: "USD".into() });
    }
}
