//! A class's subnet allow-list: JOIN only from these networks (the lecture hall's Wi-Fi), else
//! `ERR FORBIDDEN`. The address is the connection's real peer, on TCP, TLS and WebSocket alike.

use std::net::IpAddr;

use ipnet::IpNet;

/// Networks a class accepts JOINs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnets(Vec<IpNet>);

impl Subnets {
    /// Parses CIDR strings (`10.1.0.0/16`, `2001:db8::/32`; a bare address is one host).
    ///
    /// # Errors
    /// The first string that is not a network.
    pub fn parse(list: &[String]) -> Result<Self, String> {
        list.iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{s:?} is not a network like 10.1.0.0/16"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether `addr` is in one of the networks; an IPv4-mapped IPv6 address counts as IPv4.
    pub fn allows(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The networks, as configured (for messages).
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn only_the_listed_networks_are_allowed() {
        let s = Subnets::parse(&[
            "10.1.0.0/16".to_owned(),
            "192.168.5.7".to_owned(),
            "2001:db8::/32".to_owned(),
        ])
        .expect("parse");
        assert!(s.allows(ip("10.1.200.3")));
        assert!(!s.allows(ip("10.2.0.1")));
        assert!(s.allows(ip("192.168.5.7")));
        assert!(!s.allows(ip("192.168.5.8")));
        assert!(s.allows(ip("2001:db8::1")));
        assert!(s.allows(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        assert!(!s.allows(ip("127.0.0.1")));
        assert_eq!(s.describe(), "10.1.0.0/16, 192.168.5.7/32, 2001:db8::/32");
    }

    #[test]
    fn a_bad_network_is_named() {
        let e = Subnets::parse(&["10.1.0.0/33".to_owned()]).expect_err("bad");
        assert!(e.contains("10.1.0.0/33"), "{e}");
    }
}
