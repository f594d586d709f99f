//! One event to user space: the filters, cheapest first, then the event written in place
//! into the ring buffer.

use core::ptr::addr_of_mut;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_ns,
};
use teardown_common::{counter, filter, kind, Event, Owner, SockLayout, AF_INET, AF_INET6};

use crate::{
    maps::{count, EVENTS, OWNERS, PIDS, PORTS},
    owner::{current_comm, current_pid, NO_OWNER},
    sock::{self, Sock},
};

/// An event about a socket that does not change its state (`current`), stamped now unless
/// the caller knows better when it happened (`ts_ns`, else 0). Inlined: a BPF function takes
/// at most five arguments.
#[inline(always)]
pub fn note(sk: impl Sock, event_kind: u8, current: u8, reason: u8, tcp_flags: u8, ts_ns: u64) {
    let owner = unsafe { OWNERS.get(sk.addr()) }.unwrap_or(&NO_OWNER);
    emit_about(
        sk,
        false,
        owner,
        current_pid(),
        event_kind,
        current,
        current,
        reason,
        tcp_flags,
        ts_ns,
    );
}

/// Sends one event about `sk` to user space, applying the filters cheapest first: nothing
/// for a socket that is not TCP or is filtered out. Everything is read before the ring slot
/// is reserved, then written into it in place (no copy of the event on the stack).
/// `task_pid` is `owner::current_pid()`, which a caller that also records an owner reads
/// once: in a pid namespace it is a loop, and each copy of it multiplies what the verifier
/// walks (5.10 and 6.1 refused the state program with three).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn emit(
    sk: impl Sock,
    owner: &Owner,
    task_pid: u32,
    event_kind: u8,
    oldstate: u8,
    newstate: u8,
    reason: u8,
    tcp_flags: u8,
) -> Option<()> {
    emit_about(
        sk, false, owner, task_pid, event_kind, oldstate, newstate, reason, tcp_flags, 0,
    )
}

/// An event about a TCP TIME_WAIT mini-socket: it shares only `sock_common` with a socket,
/// so its local port is `skc_num`, and it has no flags or sequence state to read.
pub fn emit_mini(tw: impl Sock, event_kind: u8, substate: u8, reason: u8, tcp_flags: u8) {
    emit_about(
        tw,
        true,
        &NO_OWNER,
        current_pid(),
        event_kind,
        substate,
        substate,
        reason,
        tcp_flags,
        0,
    );
}

/// A network namespace went away (`kind::NAMESPACE_GONE`): an event about no socket.
pub fn emit_namespace_gone(netns: u32) {
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let Some(mut slot) = EVENTS.reserve::<Event>(0) else {
        let _ = count(counter::LOST_EVENTS);
        return;
    };
    let event = slot.as_mut_ptr();
    unsafe {
        zero(event.cast::<[u8; core::mem::size_of::<Event>()]>());
        set!(event.ts_ns = ts_ns);
        set!(event.kind = kind::NAMESPACE_GONE);
        set!(event.netns = netns);
    }
    slot.submit(BPF_RB_FORCE_WAKEUP.into());
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit_about(
    sk: impl Sock,
    mini_socket: bool,
    owner: &Owner,
    task_pid: u32,
    event_kind: u8,
    oldstate: u8,
    newstate: u8,
    reason: u8,
    tcp_flags: u8,
    ts_ns: u64,
) -> Option<()> {
    let filters = config!(filters);
    let family: u16 = sk.field(config!(layout.family))?;
    match family {
        AF_INET if filters & filter::IPV6_ONLY == 0 => {}
        AF_INET6 if filters & filter::IPV4_ONLY == 0 => {}
        _ => return None,
    }
    let sport = if mini_socket {
        sk.field(config!(time_wait.num))?
    } else {
        if !sock::is_tcp(sk)? {
            return None;
        }
        u16::from_be(sk.outer(config!(layout.sport))?)
    };
    let dport = u16::from_be(sk.field(config!(layout.dport))?);
    if filters & (filter::PORT_ANY | filter::PORT_LOCAL | filter::PORT_REMOTE) != 0
        && !ports_wanted(filters, sport, dport)
    {
        return None;
    }
    // Sockets of other processes go no further; sockets whose owner is not known yet go
    // up, and user space decides once the owner shows itself.
    if owner.pid != 0 && filters & filter::PID != 0 && unsafe { PIDS.get(owner.pid) }.is_none() {
        return None;
    }
    let (saddr, daddr) = if family == AF_INET {
        let saddr: u32 = sk.field(config!(layout.rcv_saddr))?;
        let daddr: u32 = sk.field(config!(layout.daddr))?;
        (ipv4(saddr), ipv4(daddr))
    } else if config!(layout.v6_daddr) != SockLayout::NONE {
        (
            sk.outer(config!(layout.v6_rcv_saddr))?,
            sk.outer(config!(layout.v6_daddr))?,
        )
    } else {
        ([0, 0], [0, 0])
    };
    let netns = if config!(layout.net_inum) != SockLayout::NONE {
        let net = sk.deref(config!(layout.sk_net));
        net.and_then(|n| n.field(config!(layout.net_inum)))
            .unwrap_or(0)
    } else {
        0
    };
    let (sock_flags, seq) = if mini_socket {
        (0, sock::SeqState::default())
    } else {
        (sock::flags(sk), sock::seq_state(sk))
    };
    // Not an Option: LLVM leaves a None's payload in an unset register, which the verifier
    // refuses to copy.
    let ts_ns = if ts_ns != 0 {
        ts_ns
    } else {
        unsafe { bpf_ktime_get_ns() }
    };

    let wakeup = wakeup_flag();
    let Some(mut slot) = EVENTS.reserve::<Event>(0) else {
        let _ = count(counter::LOST_EVENTS);
        return None;
    };
    let event = slot.as_mut_ptr();
    // Field by field with volatile stores: LLVM otherwise merges neighbouring zero bytes
    // into a call to a byte-at-a-time memset, which cost more than the rest of the program.
    unsafe {
        set!(event.ts_ns = ts_ns);
        set!(event.skaddr = sk.addr());
        put16(addr_of_mut!((*event).saddr), saddr);
        put16(addr_of_mut!((*event).daddr), daddr);
        set!(event.owner_pid = owner.pid);
        set!(event.task_pid = task_pid);
        set!(event.sport = sport);
        set!(event.dport = dport);
        set!(event.family = family);
        set!(event.kind = event_kind);
        set!(event.oldstate = oldstate);
        set!(event.newstate = newstate);
        set!(event.owner_source = owner.source);
        set!(event.sock_flags = sock_flags);
        set!(event.reason = reason);
        set!(event.tcp_flags = tcp_flags);
        zero(addr_of_mut!((*event)._pad));
        put16(addr_of_mut!((*event).owner_comm), get16(&owner.comm));
        current_comm(&mut (*event).task_comm);
        set!(event.netns = netns);
        set!(event.snd_una = seq.snd_una);
        set!(event.snd_nxt = seq.snd_nxt);
        set!(event.write_seq = seq.write_seq);
        set!(event.rcv_nxt = seq.rcv_nxt);
        set!(event.seq_flags = seq.flags);
        zero(addr_of_mut!((*event)._pad2));
    }
    slot.submit(wakeup);
    Some(())
}

/// Every `[u8; 16]` in `Event` and `Owner` sits at an 8-byte-aligned offset of an 8-aligned
/// type (see the layout tests in teardown-common), so it can be moved as two words.
#[inline(always)]
unsafe fn put16(dst: *mut [u8; 16], words: [u64; 2]) {
    let dst = dst.cast::<u64>();
    dst.write_volatile(words[0]);
    dst.add(1).write_volatile(words[1]);
}

/// Zeroes a few padding bytes one store at a time (see `set!`).
#[inline(always)]
pub unsafe fn zero<const N: usize>(dst: *mut [u8; N]) {
    let dst = dst.cast::<u8>();
    for i in 0..N {
        dst.add(i).write_volatile(0);
    }
}

#[inline(always)]
fn get16(src: &[u8; 16]) -> [u64; 2] {
    let src = (src as *const [u8; 16]).cast::<u64>();
    unsafe { [src.read(), src.add(1).read()] }
}

/// An IPv4 address in the first 4 bytes of the 16 (the BPF target is little-endian).
fn ipv4(addr: u32) -> [u64; 2] {
    [addr as u64, 0]
}

fn ports_wanted(filters: u32, sport: u16, dport: u16) -> bool {
    let local = unsafe { PORTS.get(sport) }.copied().unwrap_or(0);
    let remote = unsafe { PORTS.get(dport) }.copied().unwrap_or(0);
    let any_ok = filters & filter::PORT_ANY == 0 || (local | remote) & filter::PORT_ANY != 0;
    let local_ok = filters & filter::PORT_LOCAL == 0 || local & filter::PORT_LOCAL != 0;
    let remote_ok = filters & filter::PORT_REMOTE == 0 || remote & filter::PORT_REMOTE != 0;
    any_ok && local_ok && remote_ok
}

/// Wakes the reader only when the ring is filling up; below that it polls on a short timer,
/// because a wakeup per event is what costs most.
fn wakeup_flag() -> u64 {
    let flag = if EVENTS.query(BPF_RB_AVAIL_DATA.into()) >= config!(wakeup_bytes) as u64 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    flag.into()
}
