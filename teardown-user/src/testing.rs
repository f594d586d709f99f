//! Recorded events for the unit tests.

use teardown_common::{kind, Event, AF_INET};

/// An IPv4 event for tests: `port` local, `peer_port` remote on 127.0.0.1.
pub fn ev(ts_ns: u64, skaddr: u64, port: u16, peer_port: u16, old: u8, new: u8) -> Event {
    // SAFETY: Event is plain data; all zeroes is a valid value.
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
