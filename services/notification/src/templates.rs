//! The templates: a subject and a plain-text body each, with the order id and totals.

use shop_proto::shop::{common::v1::Money, events::v1::OrderLine};

/// The decimals of a currency's minor unit (ISO 4217): 0 for JPY, 3 for BHD, 2 for most.
pub fn minor_unit_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
        | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// `4999 USD` → `49.99 USD`, `4999 JPY` → `4999 JPY`, `4999 BHD` → `4.999 BHD`: the amount in
/// minor units shown with its currency's decimals.
pub fn format_money(money: Option<&Money>) -> String {
    let Some(money) = money else { return "-".into() };
    let digits = minor_unit_digits(&money.currency);
    if digits == 0 {
        return format!("{} {}", money.amount, money.currency);
    }
    let sign = if money.amount < 0 { "-" } else { "" };
    let absolute = money.amount.unsigned_abs();
    let unit = 10_u64.pow(digits);
    format!("{sign}{}.{:0width$} {}", absolute / unit, absolute % unit, money.currency, width = digits as usize)
}

fn lines(lines: &[OrderLine]) -> String {
    lines
        .iter()
        .map(|line| format!("  {} x {} at {}", line.quantity, line.name, format_money(line.unit_price.as_ref())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A rendered message.
pub struct Rendered {
    pub template: &'static str,
    pub subject: String,
    pub body: String,
}

pub fn welcome(name: &str) -> Rendered {
    Rendered {
        template: "welcome",
        subject: "Welcome to Shop".into(),
        body: format!("Hello {name},\n\nyour account is ready. Happy shopping!\n"),
    }
}

pub fn order_confirmed(order_id: &str, items: &[OrderLine], total: Option<&Money>) -> Rendered {
    Rendered {
        template: "order_confirmed",
        subject: format!("Order {order_id} is confirmed"),
        body: format!(
            "Thank you! Your order {order_id} is paid and confirmed.\n\n{}\n\nTotal: {}\n",
            lines(items),
            format_money(total)
        ),
    }
}

pub fn order_cancelled(order_id: &str, reason: &str, refund: bool, total: Option<&Money>) -> Rendered {
    let money =
        if refund { format!("\n{} will be refunded to your card.\n", format_money(total)) } else { String::new() };
    Rendered {
        template: "order_cancelled",
        subject: format!("Order {order_id} was cancelled"),
        body: format!("Your order {order_id} was cancelled ({reason}).\n{money}"),
    }
}

pub fn order_shipped(order_id: &str, carrier: &str, tracking_number: &str) -> Rendered {
    Rendered {
        template: "order_shipped",
        subject: format!("Order {order_id} is on its way"),
        body: format!("Your order {order_id} has shipped with {carrier}.\nTracking number: {tracking_number}\n"),
    }
}

pub fn payment_refunded(order_id: &str, amount: Option<&Money>) -> Rendered {
    Rendered {
        template: "payment_refunded",
        subject: format!("Refund for order {order_id}"),
        body: format!("We refunded {} for order {order_id}.\n", format_money(amount)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_formatted_from_minor_units() {
        let money = |amount, currency: &str| Money { amount, currency: currency.into() };
        assert_eq!(format_money(Some(&money(4999, "USD"))), "49.99 USD");
        assert_eq!(format_money(Some(&money(5, "EUR"))), "0.05 EUR");
        assert_eq!(format_money(Some(&money(1200, "JPY"))), "1200 JPY");
        assert_eq!(format_money(Some(&money(4999, "BHD"))), "4.999 BHD");
        assert_eq!(format_money(Some(&money(5, "KWD"))), "0.005 KWD");
        assert_eq!(format_money(Some(&money(-250, "USD"))), "-2.50 USD");
        assert_eq!(format_money(Some(&money(12345, "CLF"))), "1.2345 CLF");
        assert_eq!(format_money(None), "-");
        let shipped = order_shipped("o-2", "DHL", "JD0146");
        assert_eq!(shipped.template, "order_shipped");
        assert!(shipped.subject.contains("o-2") && shipped.body.contains("DHL") && shipped.body.contains("JD0146"));
        let rendered = order_confirmed("o-1", &[], Some(&money(4999, "USD")));
        assert!(rendered.subject.contains("o-1") && rendered.body.contains("49.99 USD"));
    }
}
