//! The client address of a request, for the anonymous visitors' per-address limit: the TCP
//! peer, unless the peer is one of the proxies the platform lists as trusted
//! (`GATEWAY_TRUSTED_PROXIES`, the chart's `gateway.trustedProxies`); then the address those
//! proxies put in `X-Forwarded-For`. A client can write anything into that header, so it is
//! read from the right (the entries the trusted proxies appended) and the first address that
//! is not itself a trusted proxy is the client: what a client wrote further left is ignored.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The TCP peer of a connection, put into each request's extensions by [`crate::serve`].
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// Parses `GATEWAY_TRUSTED_PROXIES`: addresses or CIDR ranges separated by commas or spaces.
pub fn parse_trusted(list: &str) -> Result<Vec<IpNet>, String> {
    list.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("GATEWAY_TRUSTED_PROXIES: {s:?} is not an IP address or CIDR range")
                })
        })
        .collect()
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    let ip = canonical(ip);
    proxies.iter().any(|n| n.contains(&ip))
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's view of IPv4 clients) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn entry(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The client's address: see the module documentation.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if !trusted(peer, proxies) {
        return peer;
    }
    // Every X-Forwarded-For field, in order, as one list.
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match entry(hop) {
            Some(ip) => {
                client = canonical(ip);
                if !trusted(client, proxies) {
                    break;
                }
            }
            // Garbage where an address belongs: no trusted proxy wrote it, so the last hop we
            // could read is as far as we go.
            None => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let proxies = parse_trusted("10.0.0.0/8, 192.168.1.5").unwrap();
        // Not from a proxy: the peer, whatever the header says.
        assert_eq!(
            client_address(ip("203.0.113.9"), &headers(&["198.51.100.1"]), &proxies),
            ip("203.0.113.9")
        );
        // From a proxy: the first untrusted address from the right.
        assert_eq!(
            client_address(ip("10.1.2.3"), &headers(&["198.51.100.1"]), &proxies),
            ip("198.51.100.1")
        );
        // A client that writes its own header cannot pick the address: the proxy appended
        // the real one at the right.
        assert_eq!(
            client_address(
                ip("10.1.2.3"),
                &headers(&["1.1.1.1, 198.51.100.1, 192.168.1.5"]),
                &proxies
            ),
            ip("198.51.100.1")
        );
        // Several fields are one list; ports and IPv6 are read.
        assert_eq!(
            client_address(
                ip("10.1.2.3"),
                &headers(&["1.1.1.1", "[2001:db8::1]:443, 10.9.9.9"]),
                &proxies
            ),
            ip("2001:db8::1")
        );
        // Garbage stops the walk at the last readable hop.
        assert_eq!(
            client_address(ip("10.1.2.3"), &headers(&["1.1.1.1, junk"]), &proxies),
            ip("10.1.2.3")
        );
        // No header: the proxy itself.
        assert_eq!(
            client_address(ip("10.1.2.3"), &headers(&[]), &proxies),
            ip("10.1.2.3")
        );
        // An IPv4-mapped peer is the IPv4 address.
        assert_eq!(
            client_address(ip("::ffff:10.1.2.3"), &headers(&["198.51.100.7"]), &proxies),
            ip("198.51.100.7")
        );
        // Nothing trusted: never the header.
        assert_eq!(
            client_address(ip("10.1.2.3"), &headers(&["198.51.100.1"]), &[]),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn the_trusted_list_is_checked() {
        assert_eq!(parse_trusted("").unwrap(), vec![]);
        assert_eq!(parse_trusted(" 10.0.0.0/8 ,fd00::/8").unwrap().len(), 2);
        let e = parse_trusted("10.0.0.0/8, proxy.local").unwrap_err();
        assert!(e.contains("proxy.local"), "{e}");
    }
}
