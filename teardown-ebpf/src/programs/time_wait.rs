//! The TIME_WAIT mini-socket, through fentry/fexit (refused by some kernels; user space
//! then says so and the transitions alone tell what they can): the socket's hand-over to
//! it, segments reaching it, its reuse by a new connection, and its end.
//!
//! The mini-socket is a different object from the socket it replaces: its events carry
//! its own address, and user space joins them to the socket's timeline by the 4-tuple,
//! which the kernel lets at most one mini-socket hold.

use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use teardown_common::{counter, kind, time_wait_end, time_wait_sender};

use crate::{
    config::floor,
    emit::{emit, emit_mini, emit_namespace_gone},
    maps::{count, OWNERS},
    owner::{self, NO_OWNER},
    sock::{read, Sock, Typed, Untyped},
};

/// `tcp_time_wait(struct sock *sk, int state, int timeo)`: `state` is the mini-socket's
/// substate.
#[fentry(function = "tcp_time_wait")]
pub fn tcp_time_wait(ctx: FEntryContext) -> u32 {
    if floor() {
        return 0;
    }
    hand_over(Typed(ctx.arg(0)), ctx.arg(1), time_wait_sender::FENTRY);
    0
}

/// The hand-over again, where the kernel may preempt fentry programs (a kernel that
/// preempts kernel code, Linux 5.12 on): a preempted fentry program still counts as
/// running on its CPU, and the kernel skips it for every hand-over there meanwhile, a
/// softirq's too (a task preempted while it takes the peer's FIN from its socket's
/// backlog). This second program, which runs first, has a running flag of its own: both
/// are skipped only while one task is preempted in each on that CPU. (A kprobe, which
/// runs with preemption off, would raise the CPU's `bpf_prog_active` while it runs, and
/// so make the classic state program skip a softirq's transition meanwhile.) Whichever
/// runs first sends the event (see `hand_over`).
#[fentry(function = "tcp_time_wait")]
pub fn tcp_time_wait_early(ctx: FEntryContext) -> u32 {
    if floor() {
        return 0;
    }
    hand_over(Typed(ctx.arg(0)), ctx.arg(1), time_wait_sender::EARLY);
    0
}

/// The socket's hand-over to a mini-socket in `substate`, seen by `sender`. The socket's
/// owner entry keeps who sent it: the second program to run sees the mark and sends
/// nothing. One call of `tcp_time_wait` runs the two in turn, and the socket's lock rules
/// out a second call for it, so the mark needs no atomics; it lives in the shared table
/// because the task may move to another CPU between the two. The early program counts
/// the hand-overs it sent, `tcp_time_wait` those it found sent: the difference is the
/// skips of `tcp_time_wait` the early one made up for. A socket without an entry (a full
/// table) gets the event from both, and user space drops the repeat; a skip of
/// `tcp_time_wait` there counts as lost.
#[inline(always)]
fn hand_over(sk: impl Sock, substate: i32, sender: u8) {
    let Some(current) = sk.field::<u8>(config!(layout.state)) else {
        return;
    };
    let key = sk.addr();
    let entry = OWNERS.get_ptr_mut(key).or_else(|| {
        owner::seeded(sk)?;
        OWNERS.get_ptr_mut(key)
    });
    if let Some(entry) = entry {
        let mark = unsafe { core::ptr::addr_of_mut!((*entry).time_wait_sender) };
        let sent = unsafe { mark.read_volatile() };
        if sender == time_wait_sender::FENTRY {
            unsafe { mark.write_volatile(sender) };
            if sent == time_wait_sender::EARLY {
                count(counter::TIME_WAIT_EARLY_SEEN);
            }
        } else if sent == 0 {
            unsafe { mark.write_volatile(sender) };
            count(counter::TIME_WAIT_EARLY_SENT);
        }
        if sent != 0 {
            return;
        }
    }
    let owner = entry.map_or(&NO_OWNER, |entry| unsafe { &*entry });
    emit(
        sk,
        owner,
        owner::current_pid(),
        kind::TIME_WAIT_ENTER,
        current,
        substate as u8,
        0,
        0,
    );
}

/// `tcp_timewait_state_process(struct inet_timewait_sock *tw, struct sk_buff *skb,
/// const struct tcphdr *th, ...)`: the first three arguments are the same on every kernel.
#[fentry(function = "tcp_timewait_state_process")]
pub fn tcp_timewait_state_process(ctx: FEntryContext) -> u32 {
    if floor() {
        return 0;
    }
    let tw: *const u8 = ctx.arg(0);
    let th: *const u8 = ctx.arg(2);
    // The TCP header as on the wire: its flags are byte 13.
    let flags: u8 = read(th as u64, 13).unwrap_or(0);
    mini_event(tw as u64, kind::TIME_WAIT_SEGMENT, 0, flags);
    0
}

/// `int tcp_twsk_unique(struct sock *sk, struct sock *sktw, void *twp)`: non-zero when
/// the connecting socket may take over the mini-socket's tuple.
#[fexit(function = "tcp_twsk_unique")]
pub fn tcp_twsk_unique(ctx: FExitContext) -> u32 {
    if floor() {
        return 0;
    }
    let tw: *const u8 = ctx.arg(1);
    let reused: i32 = ctx.arg(3);
    if reused != 0 {
        mini_event(tw as u64, kind::TIME_WAIT_REUSE, 0, 0);
    }
    0
}

/// `inet_twsk_deschedule_put(struct inet_timewait_sock *tw)`: taken down before its time.
#[fentry(function = "inet_twsk_deschedule_put")]
pub fn inet_twsk_deschedule_put(ctx: FEntryContext) -> u32 {
    if floor() {
        return 0;
    }
    let tw: *const u8 = ctx.arg(0);
    mini_event(tw as u64, kind::TIME_WAIT_END, time_wait_end::KILLED, 0);
    0
}

/// `tw_timer_handler(struct timer_list *t)`: the mini-socket's timer ran out.
#[fentry(function = "tw_timer_handler")]
pub fn tw_timer_handler(ctx: FEntryContext) -> u32 {
    if floor() {
        return 0;
    }
    let timer: *const u8 = ctx.arg(0);
    let tw = (timer as u64).wrapping_sub(config!(time_wait.timer) as u64);
    mini_event(tw, kind::TIME_WAIT_END, time_wait_end::EXPIRED, 0);
    0
}

/// The most namespaces one `tcp_sk_exit_batch` call is read for: the kernel removes them
/// in batches, and the verifier needs a bound. Past it, their mini-sockets' ends are unseen.
const MAX_NAMESPACES_PER_BATCH: u32 = 64;

/// `tcp_sk_exit_batch(struct list_head *net_exit_list)`, after it returns: the namespaces
/// on the list (linked through `net.exit_list`) are going away, and their mini-sockets have
/// just been purged. Kernels that inline the purge's `inet_twsk_deschedule_put` show those
/// kills only this way.
#[fexit(function = "tcp_sk_exit_batch")]
pub fn tcp_sk_exit_batch(ctx: FExitContext) -> u32 {
    if floor() {
        return 0;
    }
    let head: *const u8 = ctx.arg(0);
    let head = head as u64;
    let mut link: u64 = read(head, 0).unwrap_or(head);
    for _ in 0..MAX_NAMESPACES_PER_BATCH {
        if link == head || link == 0 {
            break;
        }
        let net = link.wrapping_sub(config!(time_wait.net_exit_list) as u64);
        if let Some(inum) = read::<u32>(net, config!(layout.net_inum)) {
            emit_namespace_gone(inum);
        }
        link = read(link, 0).unwrap_or(head);
    }
    0
}

/// Read with `bpf_probe_read_kernel`: the pointers are typed as other structs, or not at
/// all, and these events are rare.
fn mini_event(tw: u64, event_kind: u8, reason: u8, tcp_flags: u8) {
    let tw = Untyped(tw);
    if let Some(substate) = tw.field::<u8>(config!(time_wait.substate)) {
        emit_mini(tw, event_kind, substate, reason, tcp_flags);
    }
}
