//! The client's address: the TCP peer, or — when the peer is a trusted proxy — the right-most
//! `X-Forwarded-For` entry that is not itself a trusted proxy. Taking the right-most untrusted
//! entry (not the left-most) means a client cannot choose its own address by sending the header.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            return Some(peer);
        };
        for part in text.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                // A malformed chain cannot be trusted: fall back to the proxy itself.
                Err(_) => return Some(peer),
            }
        }
    }
    Some(
        hops.into_iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .unwrap_or(peer),
    )
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
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let got = client_ip(Some(ip("203.0.113.9")), &headers(&["1.2.3.4"]), &trusted);
        assert_eq!(got, Some(ip("203.0.113.9")));
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The client forged "6.6.6.6"; the edge proxy appended the real address, then an inner
        // proxy (10.1.1.1) appended the edge.
        let h = headers(&["6.6.6.6, 198.51.100.7", "10.1.1.1"]);
        assert_eq!(
            client_ip(Some(ip("10.2.2.2")), &h, &trusted),
            Some(ip("198.51.100.7"))
        );
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let got = client_ip(Some(ip("10.2.2.2")), &headers(&["198.51.100.7"]), &[]);
        assert_eq!(got, Some(ip("10.2.2.2")));
    }

    #[test]
    fn a_malformed_header_falls_back_to_the_peer() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let got = client_ip(Some(ip("10.2.2.2")), &headers(&["not-an-ip"]), &trusted);
        assert_eq!(got, Some(ip("10.2.2.2")));
    }
}
