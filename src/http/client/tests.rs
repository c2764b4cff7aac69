use axum::http::HeaderValue;
use proptest::prelude::*;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn trusted(ranges: &[&str]) -> TrustedProxies {
    TrustedProxies::new(ranges.iter().map(|r| parse_range(r).unwrap()).collect())
}

fn client(peer: &str, lines: &[&str], proxies: &TrustedProxies) -> IpAddr {
    let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    client_address(ip(peer), &lines, proxies)
}

#[test]
fn the_client_is_the_nearest_address_no_trusted_proxy_stands_for() {
    let proxies = trusted(&["10.0.0.0/8", "192.168.1.1"]);
    let cases: &[(&str, &[&str], &str, &str)] = &[
        ("203.0.113.9", &[], "203.0.113.9", "no header: the peer"),
        ("203.0.113.9", &["198.51.100.1"], "203.0.113.9", "an untrusted peer's header is ignored"),
        ("10.1.2.3", &[], "10.1.2.3", "a trusted peer without a header is the client"),
        ("10.1.2.3", &["198.51.100.1"], "198.51.100.1", "one proxy"),
        ("10.1.2.3", &["198.51.100.1, 10.9.9.9"], "198.51.100.1", "two proxies"),
        ("10.1.2.3", &["198.51.100.1, 192.168.1.1, 10.9.9.9"], "198.51.100.1", "a single trusted address"),
        ("10.1.2.3", &["1.1.1.1, 198.51.100.1"], "198.51.100.1", "what the client wrote is never reached"),
        ("10.1.2.3", &["evil, 198.51.100.1"], "198.51.100.1", "nor is garbage the client wrote"),
        ("10.1.2.3", &["1.1.1.1", "198.51.100.1"], "198.51.100.1", "header lines are one list, in order"),
        ("10.1.2.3", &["198.51.100.1", "10.9.9.9"], "198.51.100.1", "walking across lines"),
        ("10.1.2.3", &["10.4.4.4, 10.9.9.9"], "10.4.4.4", "all trusted: the leftmost"),
        ("10.1.2.3", &[""], "10.1.2.3", "an empty header: the peer"),
        ("10.1.2.3", &[" , 198.51.100.1 ,"], "198.51.100.1", "empty elements mean nothing"),
        ("10.1.2.3", &["198.51.100.1, unknown"], "10.1.2.3", "a proxy wrote garbage: the peer"),
        ("10.1.2.3", &["198.51.100.1, 10.9.9.9:80"], "198.51.100.1", "an address with a port"),
        ("10.1.2.3", &["[2001:db8::1]:443"], "2001:db8::1", "an IPv6 address with a port"),
        ("10.1.2.3", &["2001:db8::1"], "2001:db8::1", "IPv6"),
        ("10.1.2.3", &["::ffff:198.51.100.1"], "198.51.100.1", "IPv4-mapped is IPv4"),
        ("::ffff:10.1.2.3", &["198.51.100.1"], "198.51.100.1", "a mapped peer is trusted by its IPv4 range"),
        ("::ffff:203.0.113.9", &["198.51.100.1"], "203.0.113.9", "and an untrusted one is shown as IPv4"),
        ("10.1.2.3", &["198.51.100.1;x"], "10.1.2.3", "not an address"),
    ];
    for (peer, lines, expected, why) in cases {
        assert_eq!(client(peer, lines, &proxies), ip(expected), "{why}: {peer} {lines:?}");
    }
}

#[test]
fn nobody_is_trusted_by_default() {
    let nobody = TrustedProxies::default();
    assert_eq!(client("127.0.0.1", &["198.51.100.1"], &nobody), ip("127.0.0.1"));
    assert!(!nobody.contains(ip("127.0.0.1")));
}

#[test]
fn a_header_that_is_not_text_gives_the_peer() {
    let proxies = trusted(&["10.0.0.0/8"]);
    let lines: [&[u8]; 1] = [b"198.51.100.\xff"];
    assert_eq!(client_address(ip("10.1.2.3"), &lines, &proxies), ip("10.1.2.3"));
    // Left of the client it is never read, on its own line or on the one a proxy added to.
    let lines: [&[u8]; 2] = [b"\xff", b"198.51.100.1"];
    assert_eq!(client_address(ip("10.1.2.3"), &lines, &proxies), ip("198.51.100.1"));
    let lines: [&[u8]; 1] = [b"\x80, 198.51.100.1"];
    assert_eq!(client_address(ip("10.1.2.3"), &lines, &proxies), ip("198.51.100.1"));
}

#[test]
fn from_request_headers() {
    let proxies = trusted(&["10.0.0.0/8"]);
    let mut headers = HeaderMap::new();
    headers.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
    headers.append("X-Forwarded-For", HeaderValue::from_static("198.51.100.1, 10.0.0.2"));
    assert_eq!(proxies.client(ip("10.0.0.1"), &headers), ip("198.51.100.1"));
    assert_eq!(proxies.client(ip("203.0.113.9"), &headers), ip("203.0.113.9"));
    assert_eq!(proxies.client(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
}

#[test]
fn ranges_are_cidrs_or_addresses() {
    assert_eq!(parse_range("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
    assert_eq!(parse_range(" 10.1.2.3/8 ").unwrap().to_string(), "10.0.0.0/8", "host bits are dropped");
    assert_eq!(parse_range("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
    assert_eq!(parse_range("fd00::/8").unwrap().to_string(), "fd00::/8");
    assert_eq!(parse_range("2001:db8::1").unwrap().to_string(), "2001:db8::1/128");
    for bad in ["", "10.0.0.0/33", "ingress", "10.0.0.0/8,10.1.0.0/16", "10.0.0.0/"] {
        assert!(parse_range(bad).is_err(), "{bad:?}");
    }
}

fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
        // Often inside the trusted range below, so that walks go deep.
        any::<[u8; 3]>().prop_map(|[a, b, c]| IpAddr::from([10, a, b, c])),
    ]
}

/// Header lines: addresses, ports, garbage and empty elements, or any bytes at all.
fn lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let entry = prop_oneof![
        address().prop_map(|a| a.to_string()),
        (address(), any::<u16>()).prop_map(|(a, p)| SocketAddr::new(a, p).to_string()),
        "[ a-z0-9.:;\\[\\]]{0,12}",
    ];
    let line = prop_oneof![
        prop::collection::vec(entry, 0..6).prop_map(|e| e.join(",").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..40),
    ];
    prop::collection::vec(line, 0..4)
}

fn entries(lines: &[Vec<u8>]) -> Vec<IpAddr> {
    lines
        .iter()
        .flat_map(|l| l.split(|&b| b == b','))
        .filter_map(|e| std::str::from_utf8(e.trim_ascii()).ok().and_then(parse_entry))
        .collect()
}

proptest! {
    #[test]
    fn an_untrusted_peers_header_is_never_used(
        peer in address().prop_filter("not a proxy", |a| !trusted(&["10.0.0.0/8"]).contains(*a)),
        lines in lines(),
    ) {
        let proxies = trusted(&["10.0.0.0/8"]);
        let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(client_address(peer, &lines, &proxies), peer.to_canonical());
    }

    #[test]
    fn the_client_is_the_peer_or_from_the_header(peer in address(), lines in lines()) {
        let proxies = trusted(&["10.0.0.0/8", "2001:db8::/32"]);
        let slices: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        let client = client_address(peer, &slices, &proxies);
        prop_assert!(client == peer.to_canonical() || entries(&lines).contains(&client), "{client}");
    }

    /// Whatever a client writes into the header, the address a trusted proxy appended for it
    /// is its key.
    #[test]
    fn a_client_cannot_choose_its_address(
        peer in any::<[u8; 3]>().prop_map(|[a, b, c]| IpAddr::from([10, a, b, c])),
        written in lines(),
        real in address().prop_filter("not a proxy", |a| !trusted(&["10.0.0.0/8"]).contains(*a)),
        hops in prop::collection::vec(any::<[u8; 3]>(), 0..3),
    ) {
        let proxies = trusted(&["10.0.0.0/8"]);
        let appended: Vec<String> = std::iter::once(real.to_string())
            .chain(hops.iter().map(|[a, b, c]| format!("10.{a}.{b}.{c}")))
            .collect();
        let appended = appended.join(", ");
        // The nearest proxy adds to the client's last line, or adds its own.
        let mut joined = written.clone();
        match joined.last_mut() {
            Some(last) => last.extend_from_slice(format!(", {appended}").as_bytes()),
            None => joined.push(appended.into_bytes()),
        }
        let slices: Vec<&[u8]> = joined.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(client_address(peer, &slices, &proxies), real.to_canonical());
    }
}
