//! `sock:inet_sock_set_state`: every TCP state transition, as an event stamped with the
//! socket's owner.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use teardown_common::{counter, filter, kind, owner_source, state};

use crate::{
    emit::emit,
    maps::{count, OWNERS, RUNNING},
    owner::{self, NO_OWNER},
    sock::{Sock, Typed},
};

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let running = RUNNING.get_ptr_mut(0);
    if let Some(flag) = running {
        unsafe { write_volatile(flag, 1) };
    }
    transition(&ctx);
    if let Some(flag) = running {
        unsafe { write_volatile(flag, 0) };
    }
    0
}

/// The kernel does not run a program that fires again on a CPU where it is still running
/// (a softirq interrupting it there); it only counts the miss. This second program,
/// attached after the first, finds the first one marked running on its CPU exactly then,
/// and does its work instead. A hit in the few instructions the kernel runs around the
/// first program, outside its mark, stays a counted miss.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_nested(ctx: BtfTracePointContext) -> i32 {
    let interrupted = RUNNING
        .get_ptr(0)
        .is_some_and(|flag| unsafe { read_volatile(flag) } != 0);
    if interrupted {
        count(counter::NESTED_RUNS);
        transition(&ctx);
    }
    0
}

#[inline(always)]
fn transition(ctx: &BtfTracePointContext) {
    let sk: *const u8 = ctx.arg(0);
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    try_transition(ctx, Typed(sk), old as u8, new as u8);
}

/// One owner-table operation per transition at most: this runs ten times per connection.
#[inline(always)]
fn try_transition(ctx: &BtfTracePointContext, sk: Typed, old: u8, new: u8) {
    let key = sk.addr();
    let wanted = config!(filters) & filter::CLOSING_ONLY == 0 || !state::is_opening(new);
    let recorded;
    let mut known = None;
    let owner = match new {
        state::SYN_SENT => {
            recorded = owner::record(ctx, key, owner_source::CONNECT);
            &recorded
        }
        state::LISTEN => {
            recorded = owner::record(ctx, key, owner_source::LISTEN);
            &recorded
        }
        state::FIN_WAIT1 | state::LAST_ACK => {
            recorded = owner::confirm(ctx, sk);
            &recorded
        }
        _ => {
            if wanted || new == state::SYN_RECV {
                known = unsafe { OWNERS.get(key) };
                if known.is_none() && new == state::CLOSE_WAIT {
                    known = owner::behind_fin(key);
                }
                if known.is_none() {
                    known = owner::seeded(sk);
                }
            }
            known.unwrap_or(&NO_OWNER)
        }
    };
    if wanted {
        emit(sk, owner, kind::STATE, old, new, 0, 0);
    }
    // CLOSE ends the entry; a new child socket may sit at the address of a dead one whose
    // end was missed.
    if known.is_some() && matches!(new, state::CLOSE | state::SYN_RECV) {
        let _ = OWNERS.remove(key);
    }
}
