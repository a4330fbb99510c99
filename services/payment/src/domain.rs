//! Pure rules: a payment, its status, and what a charge outcome makes of it.

use chrono::{DateTime, Utc};
use shop_kit::api::Money;
use uuid::Uuid;

use crate::provider::Charge;

/// Where a payment is: waiting for its charge, taken, declined, waiting for its refund,
/// given back, or refused a refund.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentStatus {
    Pending,
    Succeeded,
    Failed,
    RefundPending,
    Refunded,
    /// The provider refused the refund for good: a person must give the money back.
    RefundFailed,
}

/// Every status, in the order a payment can pass through them.
pub const STATUSES: [PaymentStatus; 6] = [
    PaymentStatus::Pending,
    PaymentStatus::Succeeded,
    PaymentStatus::Failed,
    PaymentStatus::RefundPending,
    PaymentStatus::Refunded,
    PaymentStatus::RefundFailed,
];

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::RefundPending => "refund_pending",
            Self::Refunded => "refunded",
            Self::RefundFailed => "refund_failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        STATUSES.into_iter().find(|status| status.as_str() == text)
    }

    /// The status a charge outcome leaves a pending payment in, and why it failed if it did.
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

/// A payment about to be stored, `pending`: its timestamps are the database's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPayment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub amount: i64,
    pub currency: String,
    /// The provider's token for the card.
    pub card_token: String,
}

/// What the worker is to do with a payment it claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    Charge,
    Refund,
}

/// A payment the worker has claimed: what it needs to call the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub id: Uuid,
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub work: Work,
    pub card_token: Option<String>,
    /// Claims of this work so far, this one included.
    pub claims: u32,
    /// The trace of the event that made the work due, continued by the worker.
    pub trace: shop_kit::telemetry::StoredContext,
}

impl Claimed {
    /// The provider idempotency key of the charge: the payment id.
    pub fn charge_key(&self) -> String {
        self.id.to_string()
    }

    /// The provider idempotency key of the refund.
    pub fn refund_key(&self) -> String {
        format!("{}-refund", self.id)
    }

    /// The key of this claim's work.
    pub fn key(&self) -> String {
        match self.work {
            Work::Charge => self.charge_key(),
            Work::Refund => self.refund_key(),
        }
    }

    /// Whether an earlier claim may have reached the provider without its outcome being
    /// recorded (a crash, a timeout, a failed commit): then the provider is asked first.
    pub fn maybe_called_before(&self) -> bool {
        self.claims > 1
    }

    pub fn amount(&self) -> Money {
        Money { amount: self.amount, currency: self.currency.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_text() {
        for status in STATUSES {
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(
            STATUSES.map(PaymentStatus::as_str),
            ["pending", "succeeded", "failed", "refund_pending", "refunded", "refund_failed"],
            "the texts are the stored values (the CHECK constraint) and the REST values"
        );
        for unknown in ["", "Succeeded", "processing", "refunded "] {
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
    fn a_claim_keys_its_work_by_the_payment_and_knows_when_to_look_up_first() {
        let id = Uuid::now_v7();
        let mut claimed = Claimed {
            id,
            order_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            amount: 1,
            currency: "EUR".into(),
            work: Work::Charge,
            card_token: Some("tok_visa".into()),
            claims: 1,
            trace: shop_kit::telemetry::StoredContext::default(),
        };
        assert_eq!(claimed.key(), id.to_string());
        assert!(!claimed.maybe_called_before(), "the first claim calls the provider directly");
        claimed.claims = 2;
        assert!(claimed.maybe_called_before());
        claimed.work = Work::Refund;
        assert_eq!(claimed.key(), format!("{id}-refund"));
        assert_ne!(claimed.refund_key(), claimed.charge_key(), "a refund never replays the charge's key");
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
