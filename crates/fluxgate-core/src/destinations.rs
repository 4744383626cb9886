//! Where FluxGate may send a request of its own (webhooks, audit streams): the one rule against
//! server-side request forgery. Public addresses are fine; loopback, private, link-local,
//! shared, multicast and other special-purpose addresses are refused unless the operator allows
//! their network. The delivery worker applies the same rule to every address a name resolves to,
//! at each connection, so a name that later resolves inward is still refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A network the operator allows despite its being private (`10.1.0.0/16`, `127.0.0.1/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Network, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or a network (a.b.c.d/n)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.trim()
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?
        };
        Ok(Network { addr, prefix })
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What kind of non-public address `ip` is, or `None` for a public one.
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(a) => special_v4(a),
        IpAddr::V6(a) => special_v6(a),
    }
}

fn special_v4(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    Some(if a.is_loopback() {
        "loopback"
    } else if a.is_private() {
        "private"
    } else if a.is_link_local() {
        "link-local"
    } else if a.is_unspecified() || o[0] == 0 {
        "unspecified"
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        "shared (carrier-grade NAT)"
    } else if a.is_multicast() || a.is_broadcast() || o[0] >= 240 {
        "multicast or reserved"
    } else if a.is_documentation() || (o[0] == 198 && (o[1] & 0xfe) == 18) || o[..3] == [192, 0, 0]
    {
        "special-purpose"
    } else {
        return None;
    })
}

fn special_v6(a: Ipv6Addr) -> Option<&'static str> {
    let s = a.segments();
    Some(if a.is_loopback() {
        "loopback"
    } else if a.is_unspecified() {
        "unspecified"
    } else if (s[0] & 0xfe00) == 0xfc00 {
        "private (unique local)"
    } else if (s[0] & 0xffc0) == 0xfe80 {
        "link-local"
    } else if a.is_multicast() {
        "multicast or reserved"
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        "special-purpose"
    } else if s[0] == 0x64 && s[1] == 0xff9b {
        // NAT64: judge the IPv4 address it embeds.
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return special_v4(v4);
    } else {
        return None;
    })
}

/// Whether FluxGate may connect to `ip`: `Err` names why not.
pub fn permitted(ip: IpAddr, allowed: &[Network]) -> Result<(), String> {
    match special(ip) {
        None => Ok(()),
        Some(_) if allowed.iter().any(|n| n.contains(ip)) => Ok(()),
        Some(kind) => Err(format!(
            "{ip} is a {kind} address; allow its network in webhooks.allowed_private_networks \
             to send there"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn special_addresses_are_refused_unless_allowed() {
        for a in [
            "127.0.0.1",
            "10.2.3.4",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(permitted(ip(a), &[]).is_err(), "{a} passed");
        }
        for a in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(permitted(ip(a), &[]).is_ok(), "{a} refused");
        }
        let lo: Network = "127.0.0.0/8".parse().unwrap_or(Network {
            addr: ip("0.0.0.0"),
            prefix: 32,
        });
        assert!(permitted(ip("127.0.0.1"), &[lo]).is_ok());
        assert!(permitted(ip("::ffff:127.0.0.1"), &[lo]).is_ok());
        assert!(permitted(ip("10.0.0.1"), &[lo]).is_err());
    }

    #[test]
    fn networks_parse_and_bound_their_prefix() {
        assert_eq!(
            "10.1.0.0/16".parse::<Network>().map(|n| n.to_string()),
            Ok("10.1.0.0/16".to_owned())
        );
        assert_eq!(
            "::1".parse::<Network>().map(|n| n.prefix),
            Ok(128),
            "a bare address is its own network"
        );
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("ten/8".parse::<Network>().is_err());
        let all: Network = "0.0.0.0/0".parse().unwrap_or(Network {
            addr: ip("1.1.1.1"),
            prefix: 32,
        });
        assert!(all.contains(ip("10.9.9.9")));
    }
}
