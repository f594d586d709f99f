//! User space's side of the shared types: how to read an [`Event`], and the kernel's names
//! for values that differ between kernels.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{kind, Event, AF_INET6, COMM_LEN};

// SAFETY: plain #[repr(C)] data with explicit padding fields; every bit pattern is valid.
unsafe impl aya::Pod for crate::Event {}
unsafe impl aya::Pod for crate::Config {}
unsafe impl aya::Pod for crate::Owner {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// As JSON and the `-4`/`-6` filters name it.
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// The bytes of a kernel task name, without the trailing NULs. Any bytes at all.
pub fn comm(raw: &[u8; COMM_LEN]) -> &[u8] {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    &raw[..end]
}

impl Event {
    pub fn family(&self) -> Family {
        if self.family == AF_INET6 {
            Family::Ipv6
        } else {
            Family::Ipv4
        }
    }

    pub fn local_ip(&self) -> IpAddr {
        ip(self.family(), &self.saddr)
    }

    pub fn remote_ip(&self) -> IpAddr {
        ip(self.family(), &self.daddr)
    }

    /// A reset this socket sent, whose `reason` the kernel names.
    pub fn is_reset_sent(&self) -> bool {
        self.kind == kind::RESET_SENT
    }
}

fn ip(family: Family, raw: &[u8; 16]) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(*raw)),
    }
}

/// Kernel names that are not fixed across kernels (read from BTF, or from a recording).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelNames {
    /// `enum sk_rst_reason` names by value, without the `SK_RST_REASON_` prefix. Empty on
    /// kernels before 6.10, which give no reason.
    pub reset_reasons: Vec<String>,
}

impl KernelNames {
    pub fn reset_reason(&self, value: u8) -> Option<&str> {
        self.reset_reasons.get(value as usize).map(String::as_str)
    }

    /// A reset's reason: the kernel gives one only for resets it sends.
    pub fn sent_reason(&self, sent: bool, value: u8) -> Option<&str> {
        self.reset_reason(value).filter(|_| sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_stops_at_the_first_nul_and_keeps_any_bytes() {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(b"a\"\xff\n");
        assert_eq!(comm(&raw), b"a\"\xff\n");
        assert_eq!(comm(&[b'x'; 16]).len(), 16);
    }

    #[test]
    fn addresses_follow_the_family() {
        let mut e: Event = unsafe { std::mem::zeroed() };
        e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(e.local_ip().to_string(), "127.0.0.1");
        e.family = AF_INET6;
        e.daddr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(e.remote_ip().to_string(), "::1");
        assert_eq!(e.family(), Family::Ipv6);
    }
}
