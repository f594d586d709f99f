//! Types shared by the kernel program (`teardown-ebpf`) and user space (`teardown-user`).
//!
//! Everything here is `#[repr(C)]` plain data: the kernel writes [`Event`]s into the ring
//! buffer, user space reads them back byte for byte, and user space fills [`Config`] into the
//! program's read-only data before loading it. The layout tests at the bottom pin the sizes so
//! the two sides can never drift apart silently.
//!
//! With the `user` feature, the same types carry what user space needs to read them (the
//! address family, addresses, task names, the kernel's names for values): the kernel's
//! vocabulary, in one place below capture, reconstruction and output.
#![cfg_attr(not(feature = "user"), no_std)]

#[cfg(feature = "user")]
mod user;
#[cfg(feature = "user")]
pub use user::{comm, Family, KernelNames};

/// TCP states as the kernel numbers them (`include/net/tcp_states.h`). These values are part
/// of the kernel's user-visible ABI (they appear in `/proc/net/tcp` and in the tracepoint).
pub mod state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
    pub const BOUND_INACTIVE: u8 = 13;

    /// The kernel's name for a state, as tcpstates and `ss` print it.
    pub const fn name(state: u8) -> &'static str {
        match state {
            ESTABLISHED => "ESTABLISHED",
            SYN_SENT => "SYN_SENT",
            SYN_RECV => "SYN_RECV",
            FIN_WAIT1 => "FIN_WAIT1",
            FIN_WAIT2 => "FIN_WAIT2",
            TIME_WAIT => "TIME_WAIT",
            CLOSE => "CLOSE",
            CLOSE_WAIT => "CLOSE_WAIT",
            LAST_ACK => "LAST_ACK",
            LISTEN => "LISTEN",
            CLOSING => "CLOSING",
            NEW_SYN_RECV => "NEW_SYN_RECV",
            BOUND_INACTIVE => "BOUND_INACTIVE",
            _ => "UNKNOWN",
        }
    }

    /// Transitions into these states open a connection (or listen); they do not close one.
    /// Reconstruction does not need them, so the kernel can drop them before the ring buffer.
    pub const fn is_opening(new: u8) -> bool {
        matches!(
            new,
            SYN_SENT | SYN_RECV | ESTABLISHED | LISTEN | NEW_SYN_RECV
        )
    }
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;
pub const COMM_LEN: usize = 16;

/// What produced an [`Event`].
pub mod kind {
    /// `sock:inet_sock_set_state`: `oldstate` → `newstate`.
    pub const STATE: u8 = 1;
    /// `tcp:tcp_send_reset` on this socket; `reason` says why.
    pub const RESET_SENT: u8 = 2;
    /// `tcp:tcp_receive_reset`: the peer reset this socket.
    pub const RESET_RECEIVED: u8 = 3;
    /// accept() returned a socket that had already started closing (the peer's FIN came
    /// while it waited in the accept queue, or is landing now): its owner, learned late.
    /// `newstate` is the socket's state, still ESTABLISHED when the FIN is landing now.
    pub const OWNER: u8 = 4;
    /// `tcp:tcp_retransmit_skb` while closing: a segment sent again; `tcp_flags` says
    /// whether it carried the FIN.
    pub const RETRANSMIT: u8 = 5;
    /// fentry `tcp_time_wait`: the socket hands its end over to a TIME_WAIT mini-socket.
    /// `oldstate` is the socket's state, `newstate` the mini-socket's substate: TIME_WAIT,
    /// or FIN_WAIT2 for an orphan still waiting for the peer's FIN.
    pub const TIME_WAIT_ENTER: u8 = 6;
    /// fentry `tcp_timewait_state_process`: a segment reached the mini-socket. The event's
    /// socket is the mini-socket (its tuple is the socket's); `oldstate` and `newstate` are
    /// the substate it found, `tcp_flags` the segment's flags.
    pub const TIME_WAIT_SEGMENT: u8 = 7;
    /// fexit `tcp_twsk_unique` said yes: a connect() takes over the mini-socket's 4-tuple
    /// (`net.ipv4.tcp_tw_reuse`), which kills it.
    pub const TIME_WAIT_REUSE: u8 = 8;
    /// The mini-socket ends; `reason` says how (`time_wait_end::*`).
    pub const TIME_WAIT_END: u8 = 9;
    /// fexit `tcp_sk_exit_batch`: a network namespace went away, and the kernel has just
    /// purged its TIME_WAIT mini-sockets. About no socket: only `netns` and `ts_ns` are set.
    /// The one sign of those kills where the kernel inlines the purge's
    /// `inet_twsk_deschedule_put` (5.10 and 6.1 do).
    pub const NAMESPACE_GONE: u8 = 10;

    /// Events about a TIME_WAIT mini-socket, after its socket is gone.
    pub const fn is_mini_socket(kind: u8) -> bool {
        matches!(kind, TIME_WAIT_SEGMENT | TIME_WAIT_REUSE | TIME_WAIT_END)
    }
}

/// How a TIME_WAIT mini-socket ended ([`Event::reason`] of `TIME_WAIT_END`).
pub mod time_wait_end {
    /// Its timer ran out (`tw_timer_handler`).
    pub const EXPIRED: u8 = 1;
    /// Taken down before its time (`inet_twsk_deschedule_put`): reused by a new
    /// connection, reset, a SYN that reopened the tuple, or its namespace going away.
    pub const KILLED: u8 = 2;
}

/// TCP header flags, as in [`Event::tcp_flags`].
pub mod tcp_flag {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
}

/// What the socket itself said when the event happened ([`Event::sock_flags`]).
pub mod sock_flags {
    /// `sk_shutdown & RCV_SHUTDOWN`: no more receiving (peer's FIN, or close()).
    pub const RCV_SHUTDOWN: u8 = 1;
    /// `sk_shutdown & SEND_SHUTDOWN`: this side shut down sending (shutdown() or close()).
    pub const SEND_SHUTDOWN: u8 = 2;
    /// `SOCK_DONE`: the kernel has processed the peer's FIN (set by `tcp_fin()`).
    pub const FIN_RECEIVED: u8 = 4;
    /// `SOCK_DEAD`: orphaned; no process holds the socket any more.
    pub const ORPHAN: u8 = 8;
}

/// The socket's TCP sequence and ACK state when the event happened ([`Event::seq_flags`]).
pub mod seq_flags {
    /// `snd_una`, `snd_nxt`, `write_seq`, `rcv_nxt` and the ACK bits below were read (this
    /// kernel has them, and the event came from a kernel that reads them).
    pub const KNOWN: u8 = 1;
    /// `icsk_ack.pending & ICSK_ACK_SCHED`: an ACK is owed to the peer and not sent yet.
    pub const ACK_SCHEDULED: u8 = 2;
    /// `icsk_ack.pending & ICSK_ACK_TIMER`: the delayed-ACK timer is running.
    pub const ACK_TIMER: u8 = 4;
    /// `icsk_ack.pingpong` set: delayed-ACK (interactive) mode, which a received FIN turns on.
    pub const PINGPONG: u8 = 8;
}

/// How the socket's owner in [`Event::owner_pid`] was learned: the last moment that truly
/// belonged to the owning process.
pub mod owner_source {
    pub const UNKNOWN: u8 = 0;
    pub const CONNECT: u8 = 1;
    pub const ACCEPT: u8 = 2;
    pub const LISTEN: u8 = 3;
    /// close() or shutdown(): the transitions only those calls make.
    pub const CLOSE: u8 = 4;
    /// The snapshot taken as tracing started: the socket existed before, and this process
    /// held it then (`/proc/PID/fd`).
    pub const SNAPSHOT: u8 = 5;

    pub const fn name(source: u8) -> &'static str {
        match source {
            CONNECT => "connect",
            ACCEPT => "accept",
            LISTEN => "listen",
            CLOSE => "close",
            SNAPSHOT => "snapshot",
            _ => "unknown",
        }
    }
}

/// The process that owns a socket, kept by the kernel program keyed by socket address.
/// 8-aligned wherever it lives (map, stack, static): the kernel side reads `comm` as words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub source: u8,
    /// `time_wait_sender::*`: which program saw the socket's hand-over to TIME_WAIT.
    pub time_wait_sender: u8,
    pub _pad: [u8; 2],
    pub comm: [u8; COMM_LEN],
}

/// `Owner::time_wait_sender`: which program saw the socket's hand-over to a TIME_WAIT
/// mini-socket (0: none yet). Where the kernel may preempt fentry programs, a second one,
/// `tcp_time_wait_early`, watches it too.
pub mod time_wait_sender {
    /// The early program sent the event, and `tcp_time_wait` has not run.
    pub const EARLY: u8 = 1;
    /// `tcp_time_wait` ran (and sent the event, unless the early program had).
    pub const FENTRY: u8 = 2;
}

/// Indexes of the kernel's `COUNTERS`, in each CPU's stride of `PER_CPU` slots.
pub mod counter {
    /// Events dropped because the ring buffer was full.
    pub const LOST_EVENTS: u32 = 0;
    /// Owners not recorded because the owner table was full.
    pub const LOST_OWNERS: u32 = 1;
    /// Transitions `inet_sock_set_state` did not mark handled, which one of its twins
    /// handled instead (the kernel skipped the first, or, rarely, a repeat).
    pub const NESTED_RUNS: u32 = 2;
    /// Hand-overs to TIME_WAIT `tcp_time_wait_early` saw first and sent.
    pub const TIME_WAIT_EARLY_SENT: u32 = 3;
    /// Of those, the ones `tcp_time_wait` then ran for: the others are its skips the
    /// early program made up for (or, for a moment, ones it has yet to run for).
    pub const TIME_WAIT_EARLY_SEEN: u32 = 4;
    pub const COUNT: u32 = 5;
    /// Each CPU's counters start this many slots after the previous CPU's: a cache line
    /// of their own, so that CPUs counting at once do not share one.
    pub const PER_CPU: u32 = 8;
    const _: () = assert!(COUNT <= PER_CPU);
}

/// One record in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC.
    pub ts_ns: u64,
    /// The kernel address of the `struct sock`: identifies the socket while it lives.
    pub skaddr: u64,
    /// Local and remote address; IPv4 uses the first 4 bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Owning process (tgid) or 0 when not known.
    pub owner_pid: u32,
    /// The task (tgid) that was running when the transition happened: often not the owner.
    pub task_pid: u32,
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub kind: u8,
    pub oldstate: u8,
    pub newstate: u8,
    pub owner_source: u8,
    /// `sock_flags::*`.
    pub sock_flags: u8,
    /// For `RESET_SENT`: the kernel's `enum sk_rst_reason`.
    pub reason: u8,
    /// For `RETRANSMIT`: the low byte of the segment's TCP flags (`tcp_flag::*`).
    pub tcp_flags: u8,
    pub _pad: [u8; 3],
    pub owner_comm: [u8; COMM_LEN],
    pub task_comm: [u8; COMM_LEN],
    /// The socket's network namespace (its inode number, as in `/proc/PID/ns/net`).
    pub netns: u32,
    /// `struct tcp_sock` sequence state (valid when `seq_flags` has `KNOWN`): the oldest
    /// byte not acknowledged by the peer, the next byte to send, the next byte the
    /// application will queue (unsent data lies between `snd_nxt` and `write_seq`), and the
    /// next byte expected from the peer.
    pub snd_una: u32,
    pub snd_nxt: u32,
    pub write_seq: u32,
    pub rcv_nxt: u32,
    /// `seq_flags::*`.
    pub seq_flags: u8,
    pub _pad2: [u8; 3],
}

/// `Config::filters` bits.
pub mod filter {
    /// Keep an event when its local or remote port is in `PORTS` with bit `PORT_ANY`.
    pub const PORT_ANY: u32 = 1;
    /// Keep an event when its local port is in `PORTS` with bit `PORT_LOCAL`.
    pub const PORT_LOCAL: u32 = 2;
    /// Keep an event when its remote port is in `PORTS` with bit `PORT_REMOTE`.
    pub const PORT_REMOTE: u32 = 4;
    /// Drop events of sockets whose known owner is not in `PIDS`.
    pub const PID: u32 = 8;
    pub const IPV4_ONLY: u32 = 16;
    pub const IPV6_ONLY: u32 = 32;
    /// Drop transitions that only open connections (see `state::is_opening`).
    pub const CLOSING_ONLY: u32 = 64;
}

/// Offsets inside kernel structs, read from the running kernel's BTF (and, for the
/// tracepoint records, their format files) by user space. `NONE` marks a field this
/// kernel does not have.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockLayout {
    // struct sock
    pub family: u32,
    pub protocol: u32,
    /// Size in bytes of `sk_protocol` (2 on current kernels, 1 on some older ones).
    pub protocol_size: u32,
    pub state: u32,
    pub shutdown: u32,
    /// `sk_flags` (an unsigned long) and the bit numbers of `SOCK_DEAD` and `SOCK_DONE` in it.
    pub flags: u32,
    pub flag_dead: u32,
    pub flag_done: u32,
    /// `inet_sock.inet_sport`: local port, network byte order. Unlike `skc_num` it survives
    /// the port's release just before the transition to CLOSE.
    pub sport: u32,
    /// `skc_dport`: remote port, network byte order.
    pub dport: u32,
    pub rcv_saddr: u32,
    pub daddr: u32,
    pub v6_rcv_saddr: u32,
    pub v6_daddr: u32,
    // From a task to the socket behind one of its file descriptors.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    /// Offset of `ret` in the `syscalls:sys_exit_accept*` record.
    pub accept_ret: u32,
    /// Offsets of `skaddr`, `oldstate` and `newstate` in the `sock:inet_sock_set_state`
    /// record, where the classic tracepoint program is the one attached (else 0).
    pub state_skaddr: u32,
    pub state_oldstate: u32,
    pub state_newstate: u32,
    /// Offset in `struct sk_buff` of the low byte of `tcp_skb_cb.tcp_flags` (inside `cb`).
    pub skb_tcp_flags: u32,
    /// `sock.__sk_common.skc_net.net` and `net.ns.inum`: the network namespace.
    pub sk_net: u32,
    pub net_inum: u32,
    /// `sock.sk_socket`, `socket.file`, `file.f_inode` and `inode.i_ino`: the socket's inode
    /// number, by which sockets found in a snapshot are recognised.
    pub sk_socket: u32,
    pub socket_file: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
    /// `tcp_sock` sequence numbers (the program's socket pointer is a `tcp_sock` for TCP).
    pub snd_una: u32,
    pub snd_nxt: u32,
    pub write_seq: u32,
    pub rcv_nxt: u32,
    /// `tcp_sock.tcp_clock_cache` (8 bytes): the CLOCK_MONOTONIC nanoseconds TCP last read
    /// for its segments' departure times. An active reset refreshes it right before it sends.
    pub tcp_clock_cache: u32,
    /// `inet_connection_sock.icsk_ack.pending` and `.pingpong` (one byte each), and the
    /// values of `ICSK_ACK_SCHED` and `ICSK_ACK_TIMER` in `pending`.
    pub ack_pending: u32,
    pub ack_pingpong: u32,
    pub ack_sched_bit: u32,
    pub ack_timer_bit: u32,
    /// A task's process id as a given pid namespace numbers it (the kernel's
    /// `task_tgid_nr_ns`): `task_struct.group_leader`, `.thread_pid`, `pid.level`,
    /// `pid.numbers` (one `struct upid` per level, `upid_size` bytes each), `upid.nr`,
    /// `upid.ns` and `pid_namespace.ns.inum`.
    pub task_group_leader: u32,
    pub task_thread_pid: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_size: u32,
    pub upid_nr: u32,
    pub upid_ns: u32,
    pub pidns_inum: u32,
}

impl SockLayout {
    pub const NONE: u32 = u32::MAX;
}

/// Everything user space decides before the program is loaded; placed in `.rodata`, so the
/// verifier sees the values as constants and prunes the branches that are switched off.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    pub layout: SockLayout,
    /// `filter::*` bits.
    pub filters: u32,
    /// Wake user space only once this many bytes wait in the ring buffer; below that, user
    /// space polls on a short timer. Waking on every event is what costs most
    /// (0.58 of the untraced churn rate against 0.89 without, measured on this project's
    /// machines).
    pub wakeup_bytes: u32,
    /// Arguments of the `tcp_send_reset` tracepoint (3 since Linux 6.10: with the reason).
    pub send_reset_nargs: u32,
    /// The inode of the tracer's pid namespace when it is not the initial one: pids are then
    /// numbered as that namespace numbers them (0 for a process it cannot see). 0: the
    /// initial namespace's pids, as `bpf_get_current_pid_tgid` gives them.
    pub pid_namespace: u32,
    /// Nonzero: every program returns at once. The bench's floor, what attaching the hooks
    /// alone costs; users are not offered it.
    pub floor: u32,
    pub time_wait: TimeWaitLayout,
}

/// Offsets in `struct inet_timewait_sock`, from BTF. Its `sock_common` comes first, as a
/// socket's does (user space checks), so the socket offsets of `SockLayout` read it too.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TimeWaitLayout {
    /// `skc_num`: the local port, host byte order.
    pub num: u32,
    pub substate: u32,
    /// `tw_timer`, the `timer_list` its expiry handler is given.
    pub timer: u32,
    /// `net.exit_list`, which links the namespaces `tcp_sk_exit_batch` is given.
    pub net_exit_list: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn event_layout_is_pinned() {
        assert_eq!(size_of::<Event>(), 128);
        assert_eq!(align_of::<Event>(), 8);
        assert_eq!(offset_of!(Event, saddr), 16);
        assert_eq!(offset_of!(Event, daddr), 32);
        assert_eq!(offset_of!(Event, owner_pid), 48);
        assert_eq!(offset_of!(Event, sport), 56);
        assert_eq!(offset_of!(Event, kind), 62);
        assert_eq!(offset_of!(Event, sock_flags), 66);
        assert_eq!(offset_of!(Event, owner_comm), 72);
        assert_eq!(offset_of!(Event, task_comm), 88);
        assert_eq!(offset_of!(Event, netns), 104);
        assert_eq!(offset_of!(Event, snd_una), 108);
        assert_eq!(offset_of!(Event, rcv_nxt), 120);
        assert_eq!(offset_of!(Event, seq_flags), 124);
        assert_eq!(offset_of!(Event, _pad2), 125);
    }

    #[test]
    fn config_and_owner_layouts_are_pinned() {
        assert_eq!(size_of::<SockLayout>(), 192);
        assert_eq!(size_of::<Config>(), 228);
        assert_eq!(offset_of!(Config, wakeup_bytes), 196);
        assert_eq!(offset_of!(Config, pid_namespace), 204);
        assert_eq!(offset_of!(Config, floor), 208);
        assert_eq!(offset_of!(Config, time_wait), 212);
        assert_eq!(size_of::<Owner>(), 24);
        // The kernel side moves `comm` as two 8-byte words.
        assert_eq!(align_of::<Owner>(), 8);
        assert_eq!(offset_of!(Owner, time_wait_sender), 5);
        assert_eq!(offset_of!(Owner, comm), 8);
    }

    #[test]
    fn opening_transitions_are_told_apart_from_closing_ones() {
        use state::*;
        assert!(is_opening(SYN_SENT));
        assert!(is_opening(ESTABLISHED));
        assert!(is_opening(LISTEN));
        assert!(!is_opening(CLOSE), "a failed connect ends a socket");
        assert!(
            !is_opening(FIN_WAIT1),
            "also when a fast-open socket closes from SYN_RECV"
        );
        assert!(!is_opening(CLOSE_WAIT));
    }

    #[test]
    fn state_names_match_the_kernel() {
        assert_eq!(state::name(state::FIN_WAIT1), "FIN_WAIT1");
        assert_eq!(state::name(state::CLOSE), "CLOSE");
        assert_eq!(state::name(200), "UNKNOWN");
    }
}
