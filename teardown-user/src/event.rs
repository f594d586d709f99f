//! Reading a kernel [`Event`]: addresses, names, owner. Pure; the reconstruction, filters and
//! renderers all go through these helpers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use teardown_common::Event;
use teardown_common::{kind, AF_INET6};

use crate::filter::Family;

/// The bytes of a kernel task name, without the trailing NULs. Any bytes at all.
pub fn comm(raw: &[u8; 16]) -> &[u8] {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    &raw[..end]
}

pub fn family(event: &Event) -> Family {
    if event.family == AF_INET6 {
        Family::Ipv6
    } else {
        Family::Ipv4
    }
}

fn ip(family: Family, raw: &[u8; 16]) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(*raw)),
    }
}

pub fn local_ip(event: &Event) -> IpAddr {
    ip(family(event), &event.saddr)
}

pub fn remote_ip(event: &Event) -> IpAddr {
    ip(family(event), &event.daddr)
}

/// A state transition (as opposed to the TIME_WAIT hand-over note).
pub fn is_state_change(event: &Event) -> bool {
    event.kind == kind::STATE
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use teardown_common::AF_INET;

    /// An IPv4 event for tests: `port` local, `peer_port` remote on 127.0.0.1.
    pub fn ev(ts_ns: u64, skaddr: u64, port: u16, peer_port: u16, old: u8, new: u8) -> Event {
        let mut e: Event = unsafe { std::mem::zeroed() };
        e.ts_ns = ts_ns;
        e.skaddr = skaddr;
        e.family = AF_INET;
        e.kind = kind::STATE;
        e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.sport = port;
        e.dport = peer_port;
        e.oldstate = old;
        e.newstate = new;
        e
    }

    #[test]
    fn comm_stops_at_the_first_nul_and_keeps_any_bytes() {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(b"a\"\xff\n");
        assert_eq!(comm(&raw), b"a\"\xff\n");
        assert_eq!(comm(&[b'x'; 16]).len(), 16);
    }

    #[test]
    fn addresses_follow_the_family() {
        let mut e = ev(0, 1, 80, 9, 1, 4);
        assert_eq!(local_ip(&e).to_string(), "127.0.0.1");
        e.family = AF_INET6;
        e.daddr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(remote_ip(&e).to_string(), "::1");
        assert_eq!(family(&e), Family::Ipv6);
        let _ = AF_INET;
    }
}
