//! Who the client is: the peer address, or the one trusted proxies recorded
//! (`TRUSTED_PROXY_HOPS`, `TRUSTED_PROXY_HEADER`), for the limits that count clients.

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
};

use axum::{
    extract::{ConnectInfo, FromRequestParts, Request},
    http::request::Parts,
    middleware::Next,
    response::Response,
};

use crate::config::ProxyHeader;

/// The address of the client that sent the request: the peer address, or, behind
/// `TRUSTED_PROXY_HOPS` proxies, the address the outermost trusted one recorded in
/// `TRUSTED_PROXY_HEADER` (`X-Forwarded-For` or RFC 7239's `Forwarded`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

pub(crate) async fn record(header: ProxyHeader, trusted_hops: usize, mut request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    let ip = client_address(header, trusted_hops, request.headers(), peer);
    request.extensions_mut().insert(ClientIp(ip));
    next.run(request).await
}

/// Each proxy appends the address it received the request from, so the entry `hops` from the
/// end is the one the outermost trusted proxy wrote; anything before it the client could have
/// made up. With fewer entries than trusted hops (a request that did not come through the
/// proxies) or an entry that is not an address (`unknown`, an obfuscated `_node`), the peer.
pub fn client_address(header: ProxyHeader, hops: usize, headers: &http::HeaderMap, peer: Option<IpAddr>) -> IpAddr {
    let fallback = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if hops == 0 {
        return fallback;
    }
    // Split the raw bytes: a stray non-ASCII byte in an entry a client wrote must not discard the
    // whole line, and with it the entry the proxy appended.
    let values = headers
        .get_all(header.name())
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .map(|entry| std::str::from_utf8(entry).unwrap_or(""));
    let entries: Vec<&str> = match header {
        ProxyHeader::XForwardedFor => values.map(str::trim).collect(),
        ProxyHeader::Forwarded => values
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                    .map_or("", |(_, node)| node.trim())
            })
            .collect(),
    };
    entries
        .len()
        .checked_sub(hops)
        .and_then(|index| entries.get(index))
        .and_then(|node| node_address(node))
        .unwrap_or(fallback)
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`, quoted or not.
fn node_address(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']').and_then(|(address, _)| address.parse().ok());
    }
    node.parse::<IpAddr>().ok().or_else(|| node.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().copied().unwrap_or(Self(IpAddr::from([0, 0, 0, 0]))))
    }
}

/// The key a client address is counted under: an IPv4 address (an IPv4-mapped IPv6 one as
/// IPv4), or an IPv6 address's /64, which one client usually holds whole.
pub fn limit_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_an_ipv6_client_by_its_64_and_a_mapped_ipv4_as_ipv4() {
        let key = |text: &str| limit_key(text.parse().unwrap());
        assert_eq!(key("203.0.113.9"), "203.0.113.9");
        assert_eq!(key("::ffff:203.0.113.9"), "203.0.113.9");
        assert_eq!(key("2001:db8:cafe:1::17"), key("2001:db8:cafe:1:ffff::1"), "one /64, one client");
        assert_eq!(key("2001:db8:cafe:1::17"), "2001:db8:cafe:1::/64");
        assert_ne!(key("2001:db8:cafe:1::17"), key("2001:db8:cafe:2::17"));
    }
}
