//! Payment providers. A real processor is a drop-in: implement [`PaymentProvider`]. Every
//! call carries an idempotency key (the payment id), as real processors accept, so a
//! redelivered event can never charge twice at the provider either.

use futures::future::BoxFuture;

/// What a charge led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Charge {
    Succeeded,
    /// Refused for good: `reason` is a stable code (`card_declined`, `insufficient_funds`).
    Declined {
        reason: String,
    },
}

/// A failure worth retrying (network, processor hiccup).
#[derive(Debug, thiserror::Error)]
#[error("transient provider failure: {0}")]
pub struct Transient(pub String);

pub trait PaymentProvider: Send + Sync + 'static {
    fn charge<'a>(
        &'a self,
        idempotency_key: &'a str,
        card_token: &'a str,
        amount: i64,
        currency: &'a str,
    ) -> BoxFuture<'a, Result<Charge, Transient>>;

    fn refund<'a>(
        &'a self,
        idempotency_key: &'a str,
        amount: i64,
        currency: &'a str,
    ) -> BoxFuture<'a, Result<(), Transient>>;
}

/// The built-in test provider: `tok_visa` succeeds, `tok_chargeDeclined` is declined,
/// `tok_insufficientFunds` is declined for insufficient funds, `tok_processingError`
/// fails transiently every time (so it is retried, then declined). Other tokens are
/// declined as invalid.
pub struct TestProvider;

impl PaymentProvider for TestProvider {
    fn charge<'a>(
        &'a self,
        _key: &'a str,
        card_token: &'a str,
        _amount: i64,
        _currency: &'a str,
    ) -> BoxFuture<'a, Result<Charge, Transient>> {
        Box::pin(async move {
            let declined = |reason: &str| Ok(Charge::Declined { reason: reason.to_owned() });
            match card_token {
                "tok_visa" => Ok(Charge::Succeeded),
                "tok_chargeDeclined" => declined("card_declined"),
                "tok_insufficientFunds" => declined("insufficient_funds"),
                "tok_processingError" => Err(Transient("the processor had an error".into())),
                _ => declined("invalid_card_token"),
            }
        })
    }

    fn refund<'a>(&'a self, _key: &'a str, _amount: i64, _currency: &'a str) -> BoxFuture<'a, Result<(), Transient>> {
        Box::pin(async { Ok(()) })
    }
}
