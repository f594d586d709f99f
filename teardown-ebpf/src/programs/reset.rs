//! `tcp:tcp_send_reset` and `tcp:tcp_receive_reset`: resets on a socket, with the kernel's
//! reason for those it sends.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use teardown_common::{kind, state, SockLayout};

use crate::{
    config::floor,
    emit::note,
    sock::{Sock, Typed},
};

/// `tcp_receive_reset(struct sock *sk)`
#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    let sk: *const u8 = ctx.arg(0);
    reset_event(Typed(sk), kind::RESET_RECEIVED, 0, 0);
    0
}

/// `tcp_send_reset(const struct sock *sk, const struct sk_buff *skb[, enum sk_rst_reason])`:
/// `sk` is NULL for resets that answer a segment no socket owns; `skb` is NULL for a reset
/// the socket sends of its own accord (`tcp_send_active_reset`: an abort, a close with unread
/// data), whose tracepoint runs only after the segment went out.
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    let sk: *const u8 = ctx.arg(0);
    let skb: *const u8 = ctx.arg(1);
    // The reason argument exists since Linux 6.10; the verifier drops the untaken branch.
    let reason: u32 = if config!(send_reset_nargs) >= 3 {
        ctx.arg(2)
    } else {
        0
    };
    if !sk.is_null() {
        let sent_at = if skb.is_null() {
            departure(Typed(sk))
        } else {
            0
        };
        reset_event(Typed(sk), kind::RESET_SENT, reason as u8, sent_at);
    }
    0
}

/// When an active reset left: `tcp_send_active_reset` reads TCP's clock into
/// `tcp_clock_cache` just before it sends, and the tracepoint fires after the send, which a
/// kernel that preempts kernel code can delay by milliseconds (seen on 7.2: 6 ms). 0 where
/// it cannot be read: the event is then stamped now.
fn departure(sk: Typed) -> u64 {
    if config!(layout.tcp_clock_cache) == SockLayout::NONE {
        return 0;
    }
    let sent: u64 = sk.outer(config!(layout.tcp_clock_cache)).unwrap_or(0);
    // Both are CLOCK_MONOTONIC: a value ahead of now would be a misread, not this reset.
    if sent <= unsafe { bpf_ktime_get_ns() } {
        sent
    } else {
        0
    }
}

fn reset_event(sk: Typed, event_kind: u8, reason: u8, ts_ns: u64) {
    // Time-wait and request sockets share only `sock_common` with a full socket.
    let Some(current) = sk.field::<u8>(config!(layout.state)) else {
        return;
    };
    if !matches!(current, state::TIME_WAIT | state::NEW_SYN_RECV) {
        note(sk, event_kind, current, reason, 0, ts_ns);
    }
}
