//! The platform's services, as `up` runs them (docs/architecture.md).

/// One service: its package/binary, its port, its database.
pub(crate) struct Service {
    /// The folder under services/ and the short name in logs.
    pub(crate) name: &'static str,
    pub(crate) port: u16,
    /// Its Postgres database, if it has one.
    pub(crate) database: Option<&'static str>,
}

impl Service {
    pub(crate) fn binary(&self) -> String {
        format!("{}-service", self.name)
    }
}

pub(crate) const ALL: &[Service] = &[
    Service { name: "user", port: 8081, database: Some("shop_user") },
    Service { name: "product", port: 8082, database: Some("shop_product") },
    Service { name: "cart", port: 8083, database: None },
    Service { name: "order", port: 8084, database: Some("shop_order") },
    Service { name: "payment", port: 8085, database: Some("shop_payment") },
    Service { name: "notification", port: 8086, database: Some("shop_notification") },
];
