//! `tcp:tcp_send_reset` and `tcp:tcp_receive_reset`: resets on a socket, with the kernel's
//! reason for those it sends.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use teardown_common::{kind, state};

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
    reset_event(Typed(sk), kind::RESET_RECEIVED, 0);
    0
}

/// `tcp_send_reset(const struct sock *sk, const struct sk_buff *skb[, enum sk_rst_reason])`:
/// `sk` is NULL for resets that answer a segment no socket owns.
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    let sk: *const u8 = ctx.arg(0);
    // The reason argument exists since Linux 6.10; the verifier drops the untaken branch.
    let reason: u32 = if config!(send_reset_nargs) >= 3 {
        ctx.arg(2)
    } else {
        0
    };
    if !sk.is_null() {
        reset_event(Typed(sk), kind::RESET_SENT, reason as u8);
    }
    0
}

fn reset_event(sk: Typed, event_kind: u8, reason: u8) {
    // Time-wait and request sockets share only `sock_common` with a full socket.
    let Some(current) = sk.field::<u8>(config!(layout.state)) else {
        return;
    };
    if !matches!(current, state::TIME_WAIT | state::NEW_SYN_RECV) {
        note(sk, event_kind, current, reason, 0);
    }
}
