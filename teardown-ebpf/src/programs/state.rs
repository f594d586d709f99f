//! `sock:inet_sock_set_state`: every TCP state transition, as an event stamped with the
//! socket's owner.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
    EbpfContext,
};
use teardown_common::{counter, filter, kind, owner_source, state};

use crate::{
    config::floor,
    emit::emit,
    maps::{count, handled_slot, OWNERS},
    owner::{self, NO_OWNER},
    sock::{Sock, Typed, Untyped},
};

/// The state program, where the kernel runs BTF tracepoint programs with preemption off
/// (every kernel before Linux 7.0, and a 7.x kernel that does not preempt kernel code).
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    let (sk, old, new) = arguments(&ctx);
    first_run(&ctx, sk, old, new);
    0
}

/// The state program as a classic tracepoint, for a kernel that preempts BTF tracepoint
/// programs (Linux 7.0 made tracepoint callbacks preemptible; perf's, which run this one,
/// still keep preemption off). A preempted program still counts as running on its CPU,
/// and the kernel skips it for every task there that makes a transition meanwhile: in an
/// emulated 7.2 storm, one transition in eight. The fields are read with
/// `bpf_probe_read_kernel`, dearer than a BTF program's loads.
#[tracepoint]
pub fn inet_sock_set_state_classic(ctx: TracePointContext) -> u32 {
    if floor() {
        return 0;
    }
    if let Some((sk, old, new)) = record_arguments(&ctx) {
        first_run(&ctx, sk, old, new);
    }
    0
}

/// The state program's work, with the mark its twin looks for.
#[inline(always)]
fn first_run(ctx: &impl EbpfContext, sk: impl Sock, old: u8, new: u8) {
    let handled = handled_slot();
    // A mark left by a run whose twin was skipped is no one's: gone before this run can
    // be skipped for a transition that would match it.
    if let Some(handled) = handled {
        unsafe { write_volatile(&mut (*handled)[1], 0) };
    }
    try_transition(ctx, sk, old, new);
    if let Some(handled) = handled {
        set_mark(handled, sk.addr(), old, new);
    }
}

/// Marks this change of socket `sk` handled, in the running thread's slot.
#[inline(always)]
fn set_mark(handled: *mut [u64; 8], sk: u64, old: u8, new: u8) {
    unsafe {
        write_volatile(&mut (*handled)[0], sk);
        write_volatile(&mut (*handled)[1], change(old, new));
    }
}

/// The kernel does not run a program that fires again on a CPU where it is still running
/// (a softirq interrupting it there); it only counts the miss. The classic program is
/// skipped too wherever the CPU's `bpf_prog_active` is raised: by any classic tracepoint or
/// kprobe program running there, or by a map syscall that a softirq or, on a preemptible
/// kernel, another task interrupts: another tool's, or the tracer's own as it seeds the
/// owners of the sockets open at its start (it reads its counters without one). This
/// program, which checks neither, runs last on every transition (it is attached last; on a
/// kernel that preempts it, `inet_sock_set_state_nested_early` runs before it): when no
/// program before it marked this very transition handled, they were skipped, and this
/// one does the work. (If a softirq's transition lands just as this one starts, it may do
/// a transition the first did handle; user space drops the repeat.) The mark is the
/// running thread's: where the kernel preempts the twins, the transitions other tasks make
/// meanwhile leave it alone, on this CPU or on another the task moved to.
///
/// The mark is consumed whether it matches or not, and cleared when the first program
/// starts: a mark this program does not match was left by a run that interrupted it, whose
/// own twin the kernel skipped (this one was running). Kept, it outlived its transition
/// and could hide a later skip on a socket reallocated at the same address making the same
/// change: a transition neither handed over nor counted. (Looking for a "running" flag
/// instead misses the instructions the kernel runs around the program, where it is skipped
/// but has not set its flag yet.)
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_nested(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    make_up(&ctx, Mark::Consume);
    0
}

/// A second twin, attached between the classic state program and the nested twin where
/// the kernel preempts BTF programs (see `inet_sock_set_state_classic`). There a task
/// preempted inside the nested twin makes the kernel skip it for every other task on that
/// CPU, and a transition the classic program was skipped for meanwhile (a softirq during
/// a classic program, or another tool's map syscall) was lost. This one has its own
/// running flag, so a transition is lost only when the kernel skips all three. It leaves
/// the mark for the nested twin (set, where it did the work), so that one does nothing
/// more.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_nested_early(ctx: BtfTracePointContext) -> i32 {
    if floor() {
        return 0;
    }
    make_up(&ctx, Mark::Keep);
    0
}

/// What a twin does with the mark once it has looked.
enum Mark {
    /// The last program on the tracepoint: nothing may find the mark after it.
    Consume,
    /// Another twin follows: the mark must say whether the transition is handled.
    Keep,
}

/// Does the transition unless the mark says a program before this one on the tracepoint
/// did.
#[inline(always)]
fn make_up(ctx: &BtfTracePointContext, mark: Mark) {
    let (sk, old, new) = arguments(ctx);
    let handled = handled_slot();
    let matched = handled.is_some_and(|handled| unsafe {
        write_volatile(&mut (*handled)[2], sk.addr());
        read_volatile(&(*handled)[2]) == read_volatile(&(*handled)[0])
            && read_volatile(&(*handled)[1]) == change(old, new)
    });
    if !matched {
        count(counter::NESTED_RUNS);
        try_transition(ctx, sk, old, new);
    }
    let Some(handled) = handled else {
        return;
    };
    match mark {
        Mark::Consume => unsafe { write_volatile(&mut (*handled)[1], 0) },
        Mark::Keep if !matched => set_mark(handled, sk.addr(), old, new),
        Mark::Keep => {}
    }
}

#[inline(always)]
fn arguments(ctx: &BtfTracePointContext) -> (Typed, u8, u8) {
    let sk: *const u8 = ctx.arg(0);
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    (Typed(sk), old as u8, new as u8)
}

/// The same arguments from the classic tracepoint's record, at the offsets its format gives.
#[inline(always)]
fn record_arguments(ctx: &TracePointContext) -> Option<(Untyped, u8, u8)> {
    let (skaddr, oldstate, newstate) = (
        config!(layout.state_skaddr) as usize,
        config!(layout.state_oldstate) as usize,
        config!(layout.state_newstate) as usize,
    );
    let sk: u64 = unsafe { ctx.read_at(skaddr) }.ok()?;
    let old: i32 = unsafe { ctx.read_at(oldstate) }.ok()?;
    let new: i32 = unsafe { ctx.read_at(newstate) }.ok()?;
    Some((Untyped(sk), old as u8, new as u8))
}

/// One transition, as a number (0 is none).
#[inline(always)]
fn change(old: u8, new: u8) -> u64 {
    0x1_0000 | (old as u64) << 8 | new as u64
}

/// One owner-table operation per transition at most: this runs ten times per connection.
#[inline(always)]
fn try_transition(ctx: &impl EbpfContext, sk: impl Sock, old: u8, new: u8) {
    let key = sk.addr();
    let wanted = config!(filters) & filter::CLOSING_ONLY == 0 || !state::is_opening(new);
    // Read once, where it is needed (see `emit`).
    let pid = if wanted || matches!(new, state::SYN_SENT | state::LISTEN) {
        owner::current_pid()
    } else {
        0
    };
    let recorded;
    let mut known = None;
    let owner = match new {
        state::SYN_SENT => {
            recorded = owner::record(ctx, key, owner_source::CONNECT, pid);
            &recorded
        }
        state::LISTEN => {
            recorded = owner::record(ctx, key, owner_source::LISTEN, pid);
            &recorded
        }
        state::FIN_WAIT1 | state::LAST_ACK => {
            recorded = owner::confirm(ctx, sk, pid);
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
        emit(sk, owner, pid, kind::STATE, old, new, 0, 0);
    }
    // CLOSE ends the entry; a new child socket may sit at the address of a dead one whose
    // end was missed.
    if known.is_some() && matches!(new, state::CLOSE | state::SYN_RECV) {
        let _ = OWNERS.remove(key);
    }
}
