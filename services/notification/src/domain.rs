//! Pure rules: a notification, its channel and delivery status, and what a failed attempt
//! does to it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// How a notification reaches its recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Over SMTP, to the address learnt from `UserRegistered`.
    Email,
    /// Written to the service's log (no SMTP, or no known address).
    Log,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Log => "log",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "email" => Some(Self::Email),
            "log" => Some(Self::Log),
            _ => None,
        }
    }

    /// Email when there is an address to send to, else the log.
    pub fn for_recipient(recipient: Option<&str>) -> Self {
        if recipient.is_some() { Self::Email } else { Self::Log }
    }
}

/// Where a notification is in its delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Not delivered yet; due at its next attempt.
    Pending,
    Sent,
    /// Every attempt failed; no more are made.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "sent" => Some(Self::Sent),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }

    /// The status after failed attempt number `attempt` (from 1): failed for good once it
    /// was the last allowed, else pending again.
    pub fn after_failed_attempt(attempt: u32, max_attempts: u32) -> Self {
        if attempt >= max_attempts { Self::Failed } else { Self::Pending }
    }
}

/// A stored message to one customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub id: Uuid,
    pub user_id: Uuid,
    /// The order the message is about (none for account messages).
    pub order_id: Option<Uuid>,
    pub channel: Channel,
    /// The email address, for the email channel.
    pub recipient: Option<String>,
    pub template: String,
    pub subject: String,
    /// The plain-text body.
    pub body: String,
    /// The HTML body (none on rows stored before there was one).
    pub html_body: Option<String>,
    pub status: DeliveryStatus,
    /// Delivery attempts made so far.
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    /// The trace of the event the message answers, continued by the delivery worker.
    pub trace: shop_kit::telemetry::StoredContext,
}

/// A notification about to be stored, pending: its timestamps are the database's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewNotification {
    pub id: Uuid,
    /// The event it came from: one notification per event.
    pub event_id: Uuid,
    pub user_id: Uuid,
    pub order_id: Option<Uuid>,
    pub channel: Channel,
    pub recipient: Option<String>,
    pub template: String,
    pub subject: String,
    pub body: String,
    pub html_body: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_trip_through_their_text() {
        for channel in [Channel::Email, Channel::Log] {
            assert_eq!(Channel::parse(channel.as_str()), Some(channel));
        }
        assert_eq!([Channel::Email, Channel::Log].map(Channel::as_str), ["email", "log"]);
        for unknown in ["", "Email", "sms"] {
            assert_eq!(Channel::parse(unknown), None, "{unknown:?}");
        }
        assert_eq!(Channel::for_recipient(Some("ada@example.com")), Channel::Email);
        assert_eq!(Channel::for_recipient(None), Channel::Log);
    }

    #[test]
    fn statuses_round_trip_through_their_text() {
        let all = [DeliveryStatus::Pending, DeliveryStatus::Sent, DeliveryStatus::Failed];
        for status in all {
            assert_eq!(DeliveryStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(all.map(DeliveryStatus::as_str), ["pending", "sent", "failed"]);
        for unknown in ["", "Sent", "delivered"] {
            assert_eq!(DeliveryStatus::parse(unknown), None, "{unknown:?}");
        }
    }

    #[test]
    fn the_last_allowed_attempt_fails_for_good() {
        assert_eq!(DeliveryStatus::after_failed_attempt(1, 5), DeliveryStatus::Pending);
        assert_eq!(DeliveryStatus::after_failed_attempt(4, 5), DeliveryStatus::Pending);
        assert_eq!(DeliveryStatus::after_failed_attempt(5, 5), DeliveryStatus::Failed);
        assert_eq!(DeliveryStatus::after_failed_attempt(1, 1), DeliveryStatus::Failed);
    }
}
