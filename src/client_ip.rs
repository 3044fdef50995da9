//! Who the client really is behind trusted proxies (`real_ip`), and the
//! PROXY protocol header (v1 text, v2 binary) a load balancer puts before a
//! connection's first byte (`listen[].proxy_protocol`).
//!
//! `real_ip.trusted` lists the proxies whose word is taken. A request from
//! one of them names its client in `X-Forwarded-For` (or the configured
//! header): walking the list from the right, the first address that is not
//! a trusted proxy is the client (nginx's `real_ip_recursive on`). A request
//! from anyone else is its own client, and the forwarded list it brought is
//! not passed on: a client cannot choose the address it is limited by.

use http::{HeaderMap, HeaderName};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr.trim().parse().map_err(|_| format!("`{s}` is not an address or address/bits"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => {
                b.trim().parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| format!("`{s}`: bits are 0–{max}"))?
            }
        };
        Ok(Self { net, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.bits),
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let whole = usize::from(bits / 8);
    let rest = bits % 8;
    if a.get(..whole) != b.get(..whole) {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    matches!((a.get(whole), b.get(whole)), (Some(x), Some(y)) if x & mask == y & mask)
}

/// `real_ip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealIp {
    pub trusted: Vec<Cidr>,
    pub header: HeaderName,
}

impl RealIp {
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The client behind `peer`, and whether `peer` is a trusted proxy
    /// (then the forwarded list it sent is passed on).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> (IpAddr, bool) {
        if !self.trusts(peer) {
            return (peer, false);
        }
        let mut client = peer;
        // Every value of the header, right to left, each a comma list; the
        // walk stops at anything unreadable (skipping it would let a client
        // hide the part a trusted proxy appended behind it).
        let values: Vec<&http::HeaderValue> = headers.get_all(&self.header).iter().collect();
        for v in values.iter().rev() {
            // Item by item, as bytes: an unreadable item (not text, not an
            // address) ends the walk, but the items right of it still count.
            for item in v.as_bytes().rsplit(|b| *b == b',') {
                let Some(ip) = std::str::from_utf8(item).ok().and_then(parse_forwarded_item) else {
                    return (client, true);
                };
                client = ip;
                if !self.trusts(ip) {
                    return (ip, true);
                }
            }
        }
        (client, true)
    }
}

/// One `X-Forwarded-For` item: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`
/// or `[2001:db8::1]:5678`.
fn parse_forwarded_item(item: &str) -> Option<IpAddr> {
    let item = item.trim();
    if let Ok(ip) = item.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    item.parse::<SocketAddr>().ok().map(|s| canonical(s.ip()))
}

/// Longest PROXY header read: v1's 107 bytes, v2's 16 plus addresses and
/// TLVs (a v2 header longer than this is refused).
pub const MAX_PROXY_HEADER: usize = 16 + 536;
const V2_SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

/// What a PROXY header said, once it is whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// The client's address and port; the header's length.
    From(SocketAddr, usize),
    /// A connection of the balancer's own (v2 LOCAL, v1 UNKNOWN): the peer
    /// is who it is.
    Local(usize),
}

/// Reading the start of a connection that must begin with a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Done(Proxied),
    /// Not enough bytes yet to tell.
    More,
    Bad(&'static str),
}

/// Parse the PROXY header at the start of `buf` (what has arrived so far).
pub fn parse_proxy(buf: &[u8]) -> Parsed {
    if buf.is_empty() {
        return Parsed::More;
    }
    if buf[0] == b'P' {
        return parse_v1(buf);
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Parsed::Bad("no PROXY header");
    }
    parse_v2(buf)
}

fn parse_v1(buf: &[u8]) -> Parsed {
    const MAX_V1: usize = 107;
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= MAX_V1 || !b"PROXY ".starts_with(&buf[..buf.len().min(6)]) {
            Parsed::Bad("not a PROXY v1 line")
        } else {
            Parsed::More
        };
    };
    if end + 2 > MAX_V1 {
        return Parsed::Bad("PROXY v1 line too long");
    }
    let Ok(line) = std::str::from_utf8(&buf[..end]) else { return Parsed::Bad("PROXY v1 line is not text") };
    let parts: Vec<&str> = line.split(' ').collect();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Parsed::Done(Proxied::Local(end + 2)),
        ["PROXY", fam @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let Ok(ip) = src.parse::<IpAddr>() else { return Parsed::Bad("PROXY v1 source is not an address") };
            if (*fam == "TCP4") != ip.is_ipv4() {
                return Parsed::Bad("PROXY v1 family and address disagree");
            }
            let Ok(port) = sport.parse::<u16>() else { return Parsed::Bad("PROXY v1 source port") };
            Parsed::Done(Proxied::From(SocketAddr::new(ip, port), end + 2))
        }
        _ => Parsed::Bad("malformed PROXY v1 line"),
    }
}

fn parse_v2(buf: &[u8]) -> Parsed {
    if buf.len() < 16 {
        return Parsed::More;
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Parsed::Bad("PROXY v2 version");
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if total > MAX_PROXY_HEADER {
        return Parsed::Bad("PROXY v2 header too long");
    }
    if buf.len() < total {
        return Parsed::More;
    }
    let body = &buf[16..total];
    match ver_cmd & 0x0f {
        0 => Parsed::Done(Proxied::Local(total)),
        1 => match buf[13] {
            // TCP over IPv4: src(4) dst(4) sport(2) dport(2).
            0x11 if body.len() >= 12 => {
                let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
                let port = u16::from_be_bytes([body[8], body[9]]);
                Parsed::Done(Proxied::From(SocketAddr::new(IpAddr::V4(ip), port), total))
            }
            // TCP over IPv6: src(16) dst(16) sport(2) dport(2).
            0x21 if body.len() >= 36 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&body[..16]);
                let port = u16::from_be_bytes([body[32], body[33]]);
                Parsed::Done(Proxied::From(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port), total))
            }
            // UNSPEC or a family weir does not route (UDP, unix): the
            // balancer's own connection as far as addresses go.
            0x00 => Parsed::Done(Proxied::Local(total)),
            0x11 | 0x21 => Parsed::Bad("PROXY v2 addresses cut short"),
            _ => Parsed::Done(Proxied::Local(total)),
        },
        _ => Parsed::Bad("PROXY v2 command"),
    }
}

/// Read a PROXY header off `stream` without taking a byte past it (what
/// follows is TLS or HTTP). `deadline` bounds the whole read.
pub async fn read_proxy(stream: &tokio::net::TcpStream, deadline: std::time::Duration) -> Result<Proxied, String> {
    let read = async {
        let mut buf = vec![0u8; MAX_PROXY_HEADER];
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            let n = stream.peek(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed before a PROXY header".to_string());
            }
            match parse_proxy(&buf[..n]) {
                Parsed::Bad(why) => return Err(why.to_string()),
                Parsed::Done(p) => {
                    let len = match p {
                        Proxied::From(_, l) | Proxied::Local(l) => l,
                    };
                    // Take exactly the header: peeked bytes are there to read.
                    let mut taken = vec![0u8; len];
                    let mut got = 0;
                    while got < len {
                        stream.readable().await.map_err(|e| e.to_string())?;
                        match stream.try_read(&mut taken[got..]) {
                            Ok(0) => return Err("closed inside the PROXY header".to_string()),
                            Ok(m) => got += m,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    return Ok(p);
                }
                // Part of the header is in: wait for more without spinning.
                Parsed::More => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(50));
                }
            }
        }
    };
    tokio::time::timeout(deadline, read).await.map_err(|_| "no PROXY header in time".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn real_ip(trusted: &[&str]) -> RealIp {
        RealIp {
            trusted: trusted.iter().map(|c| Cidr::parse(c).unwrap()).collect(),
            header: HeaderName::from_static("x-forwarded-for"),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_match_their_blocks() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains(ip("10.1.200.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")), "v4-mapped v6 is v4");
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("2001:db8::/33").unwrap().contains(ip("2001:db8:7fff::1")));
        assert!(!Cidr::parse("2001:db8::/33").unwrap().contains(ip("2001:db8:8000::1")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
        assert_eq!(Cidr::parse("10.0.0.7").unwrap(), Cidr { net: ip("10.0.0.7"), bits: 32 });
    }

    #[test]
    fn the_client_is_the_first_untrusted_address_from_the_right() {
        let r = real_ip(&["10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6, 1.2.3.4"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        assert_eq!(r.client(ip("10.0.0.1"), &h), (ip("1.2.3.4"), true), "6.6.6.6 is what 1.2.3.4 claimed");
        assert_eq!(r.client(ip("7.7.7.7"), &h), (ip("7.7.7.7"), false), "an untrusted peer is its own client");
        let mut junk = HeaderMap::new();
        junk.insert("x-forwarded-for", HeaderValue::from_static("not-an-ip, 10.0.0.3"));
        assert_eq!(r.client(ip("10.0.0.1"), &junk), (ip("10.0.0.3"), true), "stops at what it cannot read");
        let mut bytes = HeaderMap::new();
        bytes.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        bytes.append("x-forwarded-for", HeaderValue::from_bytes(b"\xff, 203.0.113.9").unwrap());
        assert_eq!(
            r.client(ip("10.0.0.1"), &bytes),
            (ip("203.0.113.9"), true),
            "an unreadable item ends the walk; what the proxy appended right of it counts"
        );
        let mut ports = HeaderMap::new();
        ports.insert("x-forwarded-for", HeaderValue::from_static("[2001:db8::5]:443, 1.2.3.4:80"));
        assert_eq!(r.client(ip("10.0.0.1"), &ports), (ip("1.2.3.4"), true));
        assert_eq!(r.client(ip("10.0.0.1"), &HeaderMap::new()), (ip("10.0.0.1"), true));
    }

    #[test]
    fn proxy_v1_and_v2_headers_parse_and_bad_ones_are_refused() {
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(parse_proxy(v1), Parsed::Done(Proxied::From("192.0.2.7:56324".parse().unwrap(), 41)));
        assert_eq!(parse_proxy(b"PROXY TCP4 192.0"), Parsed::More);
        assert_eq!(parse_proxy(b"PROXY UNKNOWN\r\n"), Parsed::Done(Proxied::Local(15)));
        assert!(matches!(parse_proxy(b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n"), Parsed::Bad(_)));
        assert!(matches!(parse_proxy(b"GET / HTTP/1.1\r\n"), Parsed::Bad(_)));
        assert!(matches!(parse_proxy(&[b'P'; 200]), Parsed::Bad(_)));
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb]);
        assert_eq!(parse_proxy(&v2), Parsed::Done(Proxied::From("198.51.100.9:8080".parse().unwrap(), 28)));
        assert_eq!(parse_proxy(&v2[..20]), Parsed::More);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse_proxy(&local), Parsed::Done(Proxied::Local(16)));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(parse_proxy(&huge), Parsed::Bad(_)));
        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(parse_proxy(&short), Parsed::Bad(_)));
    }
}
