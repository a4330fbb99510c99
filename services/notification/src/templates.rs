//! The messages: a subject, and plain-text and HTML bodies rendered with minijinja from the
//! templates in `templates/` (compiled into the binary), with amounts in each currency's
//! minor units.

use minijinja::{Environment, context};
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

/// Every template, compiled into the binary: a plain-text and an HTML body per message (the
/// HTML ones extend `layout.html.j2` and escape every value).
static TEMPLATES: std::sync::LazyLock<Environment<'static>> = std::sync::LazyLock::new(|| {
    let mut environment = Environment::new();
    environment.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    for (name, source) in [
        ("layout.html.j2", include_str!("../templates/layout.html.j2")),
        ("welcome.txt.j2", include_str!("../templates/welcome.txt.j2")),
        ("welcome.html.j2", include_str!("../templates/welcome.html.j2")),
        ("order_confirmed.txt.j2", include_str!("../templates/order_confirmed.txt.j2")),
        ("order_confirmed.html.j2", include_str!("../templates/order_confirmed.html.j2")),
        ("order_cancelled.txt.j2", include_str!("../templates/order_cancelled.txt.j2")),
        ("order_cancelled.html.j2", include_str!("../templates/order_cancelled.html.j2")),
        ("order_shipped.txt.j2", include_str!("../templates/order_shipped.txt.j2")),
        ("order_shipped.html.j2", include_str!("../templates/order_shipped.html.j2")),
        ("payment_refunded.txt.j2", include_str!("../templates/payment_refunded.txt.j2")),
        ("payment_refunded.html.j2", include_str!("../templates/payment_refunded.html.j2")),
    ] {
        // A template that does not parse fails the unit tests, which render every one.
        if let Err(error) = environment.add_template(name, source) {
            tracing::error!(template = name, %error, "a mail template does not parse");
        }
    }
    environment
});

/// A rendered message.
pub struct Rendered {
    pub template: &'static str,
    pub subject: String,
    /// The plain-text body.
    pub body: String,
    /// The HTML body.
    pub html: String,
}

/// Renders `template`'s text and HTML bodies with `context`.
fn render(template: &'static str, subject: String, context: minijinja::Value) -> Result<Rendered, minijinja::Error> {
    let body = TEMPLATES.get_template(&format!("{template}.txt.j2"))?.render(&context)?;
    let html = TEMPLATES.get_template(&format!("{template}.html.j2"))?.render(&context)?;
    Ok(Rendered { template, subject, body: format!("{}\n", body.trim_end()), html })
}

pub fn welcome(name: &str) -> Result<Rendered, minijinja::Error> {
    render("welcome", "Welcome to Shop".into(), context! { name })
}

pub fn order_confirmed(
    order_id: &str,
    items: &[OrderLine],
    total: Option<&Money>,
) -> Result<Rendered, minijinja::Error> {
    let lines: Vec<minijinja::Value> = items
        .iter()
        .map(|line| context! { quantity => line.quantity, name => line.name, price => format_money(line.unit_price.as_ref()) })
        .collect();
    render(
        "order_confirmed",
        format!("Order {order_id} is confirmed"),
        context! { order_id, lines, total => format_money(total) },
    )
}

pub fn order_cancelled(
    order_id: &str,
    reason: &str,
    refund: bool,
    total: Option<&Money>,
) -> Result<Rendered, minijinja::Error> {
    render(
        "order_cancelled",
        format!("Order {order_id} was cancelled"),
        context! { order_id, reason, refund, total => format_money(total) },
    )
}

pub fn order_shipped(order_id: &str, carrier: &str, tracking_number: &str) -> Result<Rendered, minijinja::Error> {
    render("order_shipped", format!("Order {order_id} is on its way"), context! { order_id, carrier, tracking_number })
}

pub fn payment_refunded(order_id: &str, amount: Option<&Money>) -> Result<Rendered, minijinja::Error> {
    render(
        "payment_refunded",
        format!("Refund for order {order_id}"),
        context! { order_id, amount => format_money(amount) },
    )
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
    }

    #[test]
    fn every_template_renders_text_and_escaped_html() {
        let money = |amount, currency: &str| Money { amount, currency: currency.into() };
        let line = OrderLine {
            product_id: "p-1".into(),
            name: "Lamp <b>".into(),
            quantity: 2,
            unit_price: Some(money(2000, "USD")),
        };
        let all = [
            welcome("Ada <script>alert(1)</script>").unwrap(),
            order_confirmed("o-1", &[line], Some(&money(4000, "USD"))).unwrap(),
            order_cancelled("o-1", "cancelled by request", true, Some(&money(4000, "USD"))).unwrap(),
            order_cancelled("o-1", "card_declined", false, Some(&money(4000, "USD"))).unwrap(),
            order_shipped("o-1", "DHL & Co", "JD0146").unwrap(),
            payment_refunded("o-1", Some(&money(4999, "BHD"))).unwrap(),
        ];
        for rendered in &all {
            assert!(!rendered.body.is_empty() && rendered.body.ends_with('\n'), "{}", rendered.template);
            assert!(rendered.html.starts_with("<!doctype html>"), "{}: {}", rendered.template, rendered.html);
            assert!(!rendered.html.contains("<script>") && !rendered.html.contains("<b>"), "{}", rendered.html);
        }
        assert_eq!(all[0].body, "Hello Ada <script>alert(1)</script>,\n\nyour account is ready. Happy shopping!\n");
        assert!(all[0].html.contains("Hello Ada &lt;script&gt;"), "{}", all[0].html);
        assert!(
            all[1].subject.contains("o-1") && all[1].body.contains("  2 x Lamp <b> at 20.00 USD"),
            "{}",
            all[1].body
        );
        assert!(all[1].body.contains("Total: 40.00 USD") && all[1].html.contains("Lamp &lt;b&gt;"));
        assert!(all[2].body.contains("40.00 USD will be refunded") && !all[3].body.contains("refunded"));
        assert!(all[4].body.contains("shipped with DHL & Co") && all[4].body.contains("Tracking number: JD0146"));
        assert!(all[4].html.contains("DHL &amp; Co"));
        assert_eq!(all[5].body, "We refunded 4.999 BHD for order o-1.\n");
    }
}
