//! The PROXY protocol header (HAProxy, versions 1 and 2), pure: bytes in, the client's
//! real address or a refusal out.
//!
//! A load balancer in front of corerelay connects with its own address and starts the
//! stream with a header naming the client it forwards. A listener with
//! `proxy_protocol = true` reads that header before the greeting, only from the networks
//! in `proxy_trusted_networks` (anyone else could claim any address), and uses the address
//! it carries for account identification, limits and logs. Anything malformed closes the
//! connection: no reply is sent, since the peer is not an SMTP client.
//!
//! Version 1 is one text line, `PROXY TCP4|TCP6|UNKNOWN …\r\n`, at most 107 bytes.
//! Version 2 is a 16-byte binary header (12-byte signature, version/command, family,
//! length) and the address block; TLVs after the addresses are skipped. `LOCAL` (v2) and
//! `UNKNOWN` (v1) mean the proxy speaks for itself (health checks): the connection's own
//! address is kept. The header is bounded by [`HEADER_MAX_BYTES`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included (the specification's own bound).
const V1_MAX_BYTES: usize = 107;
/// The longest v2 header accepted: the fixed part and an address block with some TLVs.
/// The specification allows 65,535 bytes of addresses and TLVs; proxies send far less.
pub const HEADER_MAX_BYTES: usize = 16 + 4096;

/// What the header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The client the proxy forwards, and the address it connected to.
    Forwarded {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The proxy's own connection (v2 LOCAL, v1 UNKNOWN): keep the real peer address.
    Local,
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// Neither signature.
    NotProxy,
    /// Too long, or a field out of place.
    Malformed(&'static str),
}

/// Parses the header at the start of `buf`. `Ok(None)`: not all of it is here yet;
/// `Ok(Some((header, used)))`: it took `used` bytes, the SMTP stream follows.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if buf.len() < V2_SIGNATURE.len() {
        // Decide early when possible, so a client speaking SMTP first is dropped at once.
        let v1 = b"PROXY ".starts_with(&buf[..buf.len().min(6)]);
        let v2 = V2_SIGNATURE.starts_with(buf);
        return if v1 || v2 {
            Ok(None)
        } else {
            Err(ProxyError::NotProxy)
        };
    }
    if buf.starts_with(&V2_SIGNATURE) {
        parse_v2(buf)
    } else if buf.starts_with(b"PROXY ") {
        parse_v1(buf)
    } else {
        Err(ProxyError::NotProxy)
    }
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX_BYTES)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX_BYTES {
            Err(ProxyError::Malformed("v1 line too long"))
        } else {
            Ok(None)
        };
    };
    let line = window[..lf]
        .strip_suffix(b"\r")
        .ok_or(ProxyError::Malformed("v1 line must end with CRLF"))?;
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::Malformed("v1 line is not text"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let header = match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => ProxyHeader::Local,
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let (src, dst) = (v1_ip(src, family)?, v1_ip(dst, family)?);
            ProxyHeader::Forwarded {
                source: SocketAddr::new(src, v1_port(sport)?),
                destination: SocketAddr::new(dst, v1_port(dport)?),
            }
        }
        _ => return Err(ProxyError::Malformed("v1 fields")),
    };
    Ok(Some((header, lf + 1)))
}

fn v1_ip(text: &str, family: &str) -> Result<IpAddr, ProxyError> {
    let bad = ProxyError::Malformed("v1 address");
    match family {
        "TCP4" => text.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| bad),
        _ => text.parse::<Ipv6Addr>().map(IpAddr::V6).map_err(|_| bad),
    }
}

/// A decimal port without sign or leading zeros.
fn v1_port(text: &str) -> Result<u16, ProxyError> {
    let bad = ProxyError::Malformed("v1 port");
    let plain = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !plain {
        return Err(bad);
    }
    text.parse().map_err(|_| bad)
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let Some(fixed) = buf.get(..16) else {
        return Ok(None);
    };
    let (version, command) = (fixed[12] >> 4, fixed[12] & 0x0f);
    if version != 2 {
        return Err(ProxyError::Malformed("v2 version"));
    }
    let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    if 16 + len > HEADER_MAX_BYTES {
        return Err(ProxyError::Malformed("v2 header too long"));
    }
    let Some(block) = buf.get(16..16 + len) else {
        return Ok(None);
    };
    let header = match command {
        0 => ProxyHeader::Local,
        1 => v2_addresses(fixed[13], block)?,
        _ => return Err(ProxyError::Malformed("v2 command")),
    };
    Ok(Some((header, 16 + len)))
}

/// The address block of a PROXY command: family/transport byte, then addresses.
fn v2_addresses(family: u8, block: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let short = ProxyError::Malformed("v2 address block too short");
    // Only TCP over IPv4 (0x11) and IPv6 (0x21) carry addresses corerelay can use;
    // UNSPEC (0x00) is a forwarded connection the proxy will not describe.
    match family {
        0x00 => Ok(ProxyHeader::Local),
        0x11 => {
            let a = block.get(..12).ok_or(short)?;
            let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]));
            let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
            Ok(ProxyHeader::Forwarded {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            })
        }
        0x21 => {
            let a = block.get(..36).ok_or(short)?;
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
            Ok(ProxyHeader::Forwarded {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            })
        }
        _ => Err(ProxyError::Malformed("v2 family is not TCP over IPv4 or IPv6")),
    }
}

/// The fuzz target's body (see `crate::smtp::fuzz`): any bytes parse, wait or are
/// refused; a header never claims bytes it was not given, and reparsing exactly the
/// header gives the same answer.
pub fn fuzz_check(data: &[u8]) {
    match parse(data) {
        Ok(Some((header, used))) => {
            assert!(used <= data.len() && used <= HEADER_MAX_BYTES);
            assert_eq!(parse(&data[..used]), Ok(Some((header, used))));
        }
        Ok(None) => assert!(data.len() < HEADER_MAX_BYTES),
        Err(_) => {}
    }
}

/// A v2 header for `source` → `destination` (tests, the load tool, fuzz seeds).
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.extend_from_slice(&[0x11, 0, 12]);
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
        }
        (s, d) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
                IpAddr::V6(ip) => ip.octets(),
            };
            out.extend_from_slice(&[0x21, 0, 36]);
            out.extend_from_slice(&v6(s));
            out.extend_from_slice(&v6(d));
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(src: &str, dst: &str) -> ProxyHeader {
        ProxyHeader::Forwarded {
            source: src.parse().unwrap(),
            destination: dst.parse().unwrap(),
        }
    }

    /// Every input, whole and cut at every length: a cut is "need more" (or refused as
    /// soon as it cannot be a header), never a different answer.
    fn check(input: &[u8], expected: Result<Option<(ProxyHeader, usize)>, ProxyError>) {
        assert_eq!(parse(input), expected, "{:?}", String::from_utf8_lossy(input));
        if let Ok(Some((_, used))) = expected {
            for cut in 0..used {
                let got = parse(&input[..cut]);
                assert!(
                    got.is_ok_and(|h| h.is_none()),
                    "cut at {cut} of {:?}: {got:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn version_1() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\nEHLO x\r\n";
        check(
            line,
            Ok(Some((forwarded("192.0.2.7:56324", "198.51.100.1:25"), 44))),
        );
        let v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 587\r\n";
        check(
            v6,
            Ok(Some((
                forwarded("[2001:db8::7]:65535", "[2001:db8::1]:587"),
                v6.len(),
            ))),
        );
        check(b"PROXY UNKNOWN\r\n", Ok(Some((ProxyHeader::Local, 15))));
        check(
            b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
            Ok(Some((ProxyHeader::Local, 35))),
        );
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",
            b"PROXY TCP4 2001:db8::7 198.51.100.1 1 25\r\n",
            b"PROXY TCP6 192.0.2.7 2001:db8::1 1 25\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 25\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 01 25\r\n",
            b"PROXY TCP4  192.0.2.7 198.51.100.1 1 25\r\n",
            b"PROXY UDP4 192.0.2.7 198.51.100.1 1 25\r\n",
        ];
        for input in bad {
            assert!(
                matches!(parse(input), Err(ProxyError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert_eq!(parse(&long), Err(ProxyError::Malformed("v1 line too long")));
    }

    #[test]
    fn version_2() {
        let v4 = encode_v2(
            "192.0.2.7:56324".parse().unwrap(),
            "198.51.100.1:25".parse().unwrap(),
        );
        check(
            &v4,
            Ok(Some((forwarded("192.0.2.7:56324", "198.51.100.1:25"), 28))),
        );
        let v6 = encode_v2(
            "[2001:db8::7]:1".parse().unwrap(),
            "[2001:db8::1]:2".parse().unwrap(),
        );
        check(
            &v6,
            Ok(Some((forwarded("[2001:db8::7]:1", "[2001:db8::1]:2"), 52))),
        );
        // TLVs after the addresses are skipped.
        let mut tlv = v4.clone();
        tlv[15] += 5;
        tlv.extend_from_slice(&[0x04, 0, 2, b'o', b'k', b'E']);
        check(
            &tlv[..tlv.len() - 1],
            Ok(Some((forwarded("192.0.2.7:56324", "198.51.100.1:25"), 33))),
        );
        // LOCAL, and UNSPEC.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        check(&local, Ok(Some((ProxyHeader::Local, 16))));
        let mut unspec = v4.clone();
        unspec[13] = 0x00;
        check(&unspec, Ok(Some((ProxyHeader::Local, 28))));

        let mut bad_version = v4.clone();
        bad_version[12] = 0x11;
        assert!(matches!(parse(&bad_version), Err(ProxyError::Malformed(_))));
        let mut bad_command = v4.clone();
        bad_command[12] = 0x22;
        assert!(matches!(parse(&bad_command), Err(ProxyError::Malformed(_))));
        let mut udp = v4.clone();
        udp[13] = 0x12;
        assert!(matches!(parse(&udp), Err(ProxyError::Malformed(_))));
        let mut short = v4.clone();
        short[15] = 4;
        assert!(matches!(parse(&short), Err(ProxyError::Malformed(_))));
        let mut huge = v4;
        huge[14] = 0xff;
        assert_eq!(parse(&huge), Err(ProxyError::Malformed("v2 header too long")));
    }

    #[test]
    fn anything_else_is_refused_as_early_as_possible() {
        assert_eq!(parse(b"EHLO"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"E"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"EHLO client.example\r\n"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b""), Ok(None));
        assert_eq!(parse(b"PRO"), Ok(None));
        assert_eq!(parse(b"\r\n\r\n\0"), Ok(None));
        assert_eq!(parse(b"\r\n\r\n\0\r\nQUIT\nx"), Ok(None));
    }
}
