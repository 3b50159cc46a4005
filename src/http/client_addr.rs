//! Who the client is: the address a request comes from, or — only when that address is a
//! proxy the operator trusts (`--trusted-proxy CIDR`) — the address the proxy reports in
//! `X-Forwarded-For`.
//!
//! `X-Forwarded-For` is read from the right: each proxy appends the address it received the
//! request from, so the rightmost address not itself a trusted proxy is the client. An
//! untrusted peer's header is ignored entirely, so a client cannot pick its own address to
//! dodge a limit or an allow-list; a header that does not parse stops the walk at the last
//! trusted hop.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`, `::1/128`) or bare addresses.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for item in items {
            let item = item.as_ref().trim();
            if item.is_empty() {
                continue;
            }
            let net = item
                .parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{item:?} is not a CIDR or an IP address"))?;
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    /// Whether `ip` is one of the trusted proxies (or host applications).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }

    /// The client's address of a request, from its parts (the peer address is put there by
    /// the connection layer; without it, the unspecified address).
    pub fn client_of(&self, parts: &Parts) -> IpAddr {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        self.client(peer, &parts.headers)
    }
}

/// The client's address of a request, as [`TrustedProxies::client`] tells it with the
/// server's `--trusted-proxy` list, and whether the peer itself is trusted (so that what it
/// says about its own clients, such as `/v1/verify`'s `client_ip`, may be believed); never
/// fails.
pub struct Client {
    pub ip: IpAddr,
    pub peer_trusted: bool,
}

impl axum::extract::FromRequestParts<super::AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &super::AppState,
    ) -> Result<Self, Self::Rejection> {
        let proxies = &state.config.trusted_proxies;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(Client {
            ip: proxies.client_of(parts),
            peer_trusted: peer.is_some_and(|p| proxies.trusts(p)),
        })
    }
}

/// An `X-Forwarded-For` element: an address, possibly with a port (`1.2.3.4:5`,
/// `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<SocketAddr>().ok().map(|s| canonical(s.ip()))
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("127.0.0.1"), &headers(&["203.0.113.9"])),
            ip("127.0.0.1")
        );
        let local = TrustedProxies::parse(&["127.0.0.0/8", "10.0.0.0/8"]).expect("parse");
        assert_eq!(
            local.client(ip("127.0.0.1"), &headers(&["203.0.113.9"])),
            ip("203.0.113.9")
        );
        // A client's own fake entry sits left of what the trusted proxies appended.
        assert_eq!(
            local.client(
                ip("127.0.0.1"),
                &headers(&["6.6.6.6, 203.0.113.9, 10.1.2.3"])
            ),
            ip("203.0.113.9")
        );
        assert_eq!(
            local.client(ip("127.0.0.1"), &headers(&["6.6.6.6", "203.0.113.9:443"])),
            ip("203.0.113.9")
        );
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(
            local.client(ip("127.0.0.1"), &headers(&["nonsense"])),
            ip("127.0.0.1")
        );
        assert_eq!(
            local.client(ip("127.0.0.1"), &headers(&[])),
            ip("127.0.0.1")
        );
        assert_eq!(
            local.client(ip("::ffff:127.0.0.1"), &headers(&["2001:db8::1"])),
            ip("2001:db8::1")
        );
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["nope"]).is_err());
        assert!(TrustedProxies::parse(&["::1", "192.0.2.1"]).is_ok());
    }
}
