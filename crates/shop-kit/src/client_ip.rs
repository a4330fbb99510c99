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
    let values = headers.get_all(header.name()).iter().filter_map(|value| value.to_str().ok());
    let entries: Vec<&str> = match header {
        ProxyHeader::XForwardedFor => values.flat_map(|value| value.split(',')).map(str::trim).collect(),
        ProxyHeader::Forwarded => values
            .flat_map(|value| value.split(','))
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
