//! Who is on the other end: the peer's address (a [`PeerAddr`] request extension, which the
//! server sets), and the scheme and host the client used. `X-Forwarded-*` and `Forwarded`
//! headers are believed only from configured trusted proxies; from anyone else they are
//! ignored, so a client cannot claim another host (RFC 9728 metadata) or another address.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::request::Parts;

/// The address of the peer that sent a request, as a request extension. The sidecar's
/// listener sets it; an axum app can copy `ConnectInfo<SocketAddr>` into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// A network: an address and a prefix length (`10.0.0.0/8`, `::1/128`, `127.0.0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// A network that is not `address[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or network (address/prefix)")]
pub struct BadNet(pub String);

impl std::str::FromStr for IpNet {
    type Err = BadNet;

    fn from_str(text: &str) -> Result<Self, BadNet> {
        let bad = || BadNet(text.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

impl IpNet {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as its IPv4).
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The proxies whose forwarded headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trusts the peers in `nets`.
    #[must_use]
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    /// Whether the request came through a trusted proxy.
    fn trusts(&self, parts: &Parts) -> bool {
        !self.nets.is_empty()
            && parts
                .extensions
                .get::<PeerAddr>()
                .is_some_and(|peer| self.nets.iter().any(|n| n.contains(peer.0.ip())))
    }

    /// The scheme and host the client used: from a trusted proxy's forwarded headers when
    /// there are any, else `http` and the request's `Host`.
    #[must_use]
    pub fn client_origin(&self, parts: &Parts) -> (String, String) {
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(http::uri::Authority::as_str))
            .unwrap_or("localhost")
            .to_owned();
        let scheme = parts.uri.scheme_str().unwrap_or("http").to_owned();
        if !self.trusts(parts) {
            return (scheme, host);
        }
        let (fwd_proto, fwd_host) = forwarded(&parts.headers);
        let proto = fwd_proto.or_else(|| first(&parts.headers, "x-forwarded-proto"));
        let fhost = fwd_host.or_else(|| first(&parts.headers, "x-forwarded-host"));
        let proto = proto
            .filter(|p| p.eq_ignore_ascii_case("http") || p.eq_ignore_ascii_case("https"))
            .map_or(scheme, |p| p.to_ascii_lowercase());
        let host = fhost.filter(|h| valid_host(h)).map_or(host, str::to_owned);
        (proto, host)
    }

    /// The client's address: a trusted proxy's `X-Forwarded-For` (its first entry) when it
    /// sent one, else the peer's; `None` when the server did not set [`PeerAddr`].
    #[must_use]
    pub fn client_ip(&self, parts: &Parts) -> Option<IpAddr> {
        let peer = parts.extensions.get::<PeerAddr>()?.0.ip();
        if !self.trusts(parts) {
            return Some(peer);
        }
        let forwarded = first(&parts.headers, "x-forwarded-for").and_then(|f| f.parse().ok());
        Some(forwarded.unwrap_or(peer))
    }
}

/// The first comma-separated entry of a header.
fn first<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let value = headers.get(name)?.to_str().ok()?;
    value
        .split(',')
        .next()
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// `proto` and `host` of the first element of an RFC 7239 `Forwarded` header.
fn forwarded(headers: &HeaderMap) -> (Option<&str>, Option<&str>) {
    let Some(element) = first(headers, "forwarded") else {
        return (None, None);
    };
    let mut proto = None;
    let mut host = None;
    for pair in element.split(';') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match key.trim().to_ascii_lowercase().as_str() {
            "proto" => proto = Some(value),
            "host" => host = Some(value),
            _ => {}
        }
    }
    (proto, host)
}

/// A host as a URL authority may carry it: no path, query, user info or spaces.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(peer: &str, headers: &[(&'static str, &'static str)]) -> Parts {
        let mut request = Request::get("/mcp");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request.body(()).expect("request");
        request
            .extensions_mut()
            .insert(PeerAddr(peer.parse().expect("address")));
        request.into_parts().0
    }

    #[test]
    fn networks_contain_their_addresses() {
        let net: IpNet = "10.0.0.0/8".parse().expect("net");
        assert!(net.contains("10.1.2.3".parse().expect("ip")));
        assert!(!net.contains("11.0.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.0.0.1".parse().expect("ip")));
        let one: IpNet = "::1".parse().expect("net");
        assert!(one.contains("::1".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("nope".parse::<IpNet>().is_err());
        let all: IpNet = "0.0.0.0/0".parse().expect("net");
        assert!(all.contains("203.0.113.9".parse().expect("ip")));
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("net")]);
        let headers = [
            ("host", "10.0.0.5:8080"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "mcp.example.com"),
            ("x-forwarded-for", "203.0.113.7, 10.0.0.9"),
        ];
        let via_proxy = parts("10.0.0.9:5555", &headers);
        assert_eq!(
            trusted.client_origin(&via_proxy),
            ("https".to_owned(), "mcp.example.com".to_owned())
        );
        assert_eq!(
            trusted.client_ip(&via_proxy),
            Some("203.0.113.7".parse().expect("ip"))
        );
        let direct = parts("192.0.2.1:5555", &headers);
        assert_eq!(
            trusted.client_origin(&direct),
            ("http".to_owned(), "10.0.0.5:8080".to_owned())
        );
        assert_eq!(
            trusted.client_ip(&direct),
            Some("192.0.2.1".parse().expect("ip"))
        );
    }

    #[test]
    fn rfc_7239_forwarded_is_read_and_bad_hosts_ignored() {
        let trusted = TrustedProxies::new(vec!["127.0.0.1".parse().expect("net")]);
        let p = parts(
            "127.0.0.1:1",
            &[
                ("host", "a"),
                ("forwarded", "for=1.2.3.4;proto=https;host=\"b.example\""),
            ],
        );
        assert_eq!(
            trusted.client_origin(&p),
            ("https".to_owned(), "b.example".to_owned())
        );
        let p = parts(
            "127.0.0.1:1",
            &[("host", "a"), ("x-forwarded-host", "evil/path")],
        );
        assert_eq!(trusted.client_origin(&p).1, "a");
    }
}
