//! Who a token request comes from, for the failed-login limit: the TCP peer, or, when the peer
//! is a proxy berth was told to trust (`--trusted-proxies`), the address that proxy saw.
//!
//! Each proxy appends the address it took the connection from to `X-Forwarded-For`, so the
//! entries at the right were written by the proxies nearest berth and those at the left by
//! whoever sent the request first, the client included, who can write anything there. Walking
//! from the right past trusted proxies and stopping at the first other address gives the client
//! as the outermost trusted proxy saw it; nothing left of it is read, so a client cannot pick its
//! own key by sending the header itself. From a peer that is not trusted the header is not read
//! at all. When every entry is a trusted proxy, the leftmost is taken: a trusted proxy wrote it.
//!
//! An entry that is not an address, reached on that walk, means a proxy berth trusts writes
//! something else: the peer is taken then, as it is without the header. Only `X-Forwarded-For`
//! is read, not `Forwarded` (RFC 7239): ingress controllers send the former.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The proxies whose `X-Forwarded-For` is believed; empty (the default) believes nobody.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    ranges: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(ranges: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies { ranges: ranges.into_iter().map(|r| r.trunc()).collect() }
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.ranges.iter().any(|r| r.contains(&address))
    }

    /// The client address of a request from `peer` with these headers.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer.to_canonical();
        }
        let values: Vec<&[u8]> = headers.get_all(X_FORWARDED_FOR).iter().map(|v| v.as_bytes()).collect();
        client_address(peer, &values, self)
    }
}

/// `--trusted-proxies` entries: a CIDR range (`10.0.0.0/8`, `fd00::/8`) or one address.
pub fn parse_range(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map(|r| r.trunc())
        .map_err(|_| format!("{text:?} is neither a CIDR range nor an IP address"))
}

/// The client of a request from `peer` whose `X-Forwarded-For` header lines are `forwarded_for`
/// (in the order received): see the module doc. Always `peer` or an address from the header.
/// IPv4-mapped IPv6 addresses are taken as the IPv4 address they carry.
pub fn client_address(peer: IpAddr, forwarded_for: &[&[u8]], trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    for line in forwarded_for.iter().rev() {
        // Split before decoding: bytes that are not text, left of the client, are never read.
        // Empty list elements are allowed in HTTP lists and mean nothing.
        for entry in line.rsplit(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|e| !e.is_empty()) {
            let Some(address) = std::str::from_utf8(entry).ok().and_then(parse_entry) else { return peer };
            client = address;
            if !trusted.contains(address) {
                return address;
            }
        }
    }
    client
}

/// An address, with a port as some proxies write it (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let address = entry.parse::<IpAddr>().or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip())).ok()?;
    Some(address.to_canonical())
}

#[cfg(test)]
mod tests;
