//! `tcp:tcp_retransmit_skb`: a segment sent again while closing, usually the FIN that did
//! not get through.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use teardown_common::{kind, state};

use crate::{
    config::floor,
    emit::note,
    sock::{Sock, Typed},
};

/// `tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb, int err)`: only
/// while closing.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    let sk = Typed(ctx.arg(0));
    let skb = Typed(ctx.arg(1));
    let Some(current) = sk.field::<u8>(config!(layout.state)) else {
        return 0;
    };
    if matches!(current, state::FIN_WAIT1 | state::CLOSING | state::LAST_ACK) {
        let flags: u8 = skb.field(config!(layout.skb_tcp_flags)).unwrap_or(0);
        note(sk, kind::RETRANSMIT, current, 0, flags, 0);
    }
    0
}
