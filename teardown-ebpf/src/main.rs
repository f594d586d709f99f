//! The kernel side of teardown: kept small on purpose.
//!
//! - `inet_sock_set_state` (the `sock:inet_sock_set_state` tracepoint, BTF-typed) turns every
//!   TCP state transition into an [`Event`] in the `EVENTS` ring buffer, stamped with the
//!   socket's owner and its `sk_shutdown` bits.
//! - `tcp_send_reset` / `tcp_receive_reset` note resets on a socket, with the kernel's reason.
//! - Owners: most transitions run in softirq, often in the *peer's* process on loopback, so
//!   the current task is not the owner. The owner is recorded at the moments that run in the
//!   owning process: connect() and listen() (transitions into SYN_SENT and LISTEN), close()
//!   and shutdown() (the only calls that move a socket into FIN_WAIT1 or LAST_ACK), and
//!   accept() (`syscalls:sys_exit_accept*`, following the returned fd to its socket).
//!
//! No kernel layout is compiled in: user space reads field offsets from the running kernel's
//! BTF into `CONFIG` (read-only data, so the verifier treats the values as constants).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// `atomic_increment` needs an atomic add, which `core::sync::atomic` leaves out for BPF.
#![cfg_attr(
    target_arch = "bpf",
    feature(core_intrinsics),
    allow(internal_features)
)]

use core::{
    mem::MaybeUninit,
    ptr::{addr_of, addr_of_mut, read_volatile, write_volatile},
};

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated,
    },
    macros::{btf_tracepoint, map, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, TracePointContext},
    EbpfContext,
};
use aya_log_ebpf::warn;
use teardown_common::{
    counter, filter, kind, owner_source, sock_flags, state, Config, Event, Owner, SockLayout,
    AF_INET, AF_INET6, COMM_LEN, IPPROTO_TCP,
};

/// Filled by user space before loading (see `teardown-user/src/capture/mod.rs`).
#[no_mangle]
static CONFIG: Config = Config {
    layout: SockLayout {
        family: 0,
        protocol: 0,
        protocol_size: 0,
        state: 0,
        shutdown: 0,
        flags: 0,
        flag_dead: 0,
        flag_done: 0,
        sport: 0,
        dport: 0,
        rcv_saddr: 0,
        daddr: 0,
        v6_rcv_saddr: 0,
        v6_daddr: 0,
        task_files: 0,
        files_fdt: 0,
        fdt_max_fds: 0,
        fdt_fd: 0,
        file_private_data: 0,
        socket_sk: 0,
        accept_ret: 0,
        skb_tcp_flags: 0,
        sk_net: 0,
        net_inum: 0,
    },
    filters: 0,
    wakeup_bytes: 0,
    send_reset_nargs: 0,
};

/// Reads one field of `CONFIG` so that the verifier sees a constant from frozen `.rodata`.
macro_rules! config {
    ($($field:tt)+) => {
        unsafe { read_volatile(addr_of!(CONFIG.$($field)+)) }
    };
}

/// Default size; user space sets the real one before loading.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// `counter::*`: what could not be recorded is counted and reported, never silent.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Port filter: port → the `filter::PORT_*` roles it is wanted in.
#[map]
static PORTS: HashMap<u16, u32> = HashMap::with_max_entries(1024, 0);

/// Owner filter: tgid → 1.
#[map]
static PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// Per CPU: 1 while `inet_sock_set_state` runs there (see `inet_sock_set_state_nested`).
#[map]
static RUNNING: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The word `full_barrier` updates: per CPU, so that no two CPUs fight over it.
#[map]
static FENCE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Socket address → owner. An entry lives from connect/listen/accept until the socket's
/// transition to CLOSE, so the table holds only live sockets. Preallocated: no allocation
/// per connection. User space sizes it (`--max-sockets`).
#[map]
static OWNERS: HashMap<u64, Owner> = HashMap::with_max_entries(1 << 17, 0);

/// The owner of a socket not in `OWNERS` (pid 0 is never a process that owns a socket).
static NO_OWNER: Owner = Owner {
    pid: 0,
    source: owner_source::UNKNOWN,
    _pad: [0; 3],
    comm: [0; COMM_LEN],
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
    try_inet_sock_set_state(ctx, Typed(sk), old as u8, new as u8);
}

/// One owner-table operation per transition at most: this runs ten times per connection.
#[inline(always)]
fn try_inet_sock_set_state(ctx: &BtfTracePointContext, sk: Typed, old: u8, new: u8) {
    let key = sk.addr();
    let wanted = config!(filters) & filter::CLOSING_ONLY == 0 || !state::is_opening(new);
    let recorded;
    let mut known = None;
    let owner = match new {
        state::SYN_SENT => {
            recorded = record_owner(ctx, key, owner_source::CONNECT);
            &recorded
        }
        state::LISTEN => {
            recorded = record_owner(ctx, key, owner_source::LISTEN);
            &recorded
        }
        state::FIN_WAIT1 | state::LAST_ACK => {
            recorded = confirm_owner(ctx, key);
            &recorded
        }
        _ => {
            if wanted || new == state::SYN_RECV {
                known = unsafe { OWNERS.get(key) };
                if known.is_none() && new == state::CLOSE_WAIT {
                    known = owner_behind_fin(key);
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

/// A FIN can land on a socket while accept() is handing it out, on another CPU. `tcp_fin()`
/// sets RCV_SHUTDOWN before the transition that calls us, and `sys_exit_accept` records
/// the owner before it reads RCV_SHUTDOWN: with a full barrier between each side's write
/// and its read, at least one side sees the other's. Either this second look finds the
/// owner, or accept() sees the FIN and says who the owner is in an OWNER event.
fn owner_behind_fin(key: u64) -> Option<&'static Owner> {
    full_barrier();
    unsafe { OWNERS.get(key) }
}

/// BPF has no fence instruction, so an atomic add stands in: the x86-64 JIT makes it a
/// `lock add`, a full barrier. (Only the value-returning form is ordered on every
/// architecture, and the BPF CPU version aya-build compiles for, v1, lacks it.)
#[inline(always)]
fn full_barrier() {
    if let Some(word) = FENCE.get_ptr_mut(0) {
        atomic_increment(word);
    }
}

/// Atomic even against a nested run on the same CPU.
#[inline(always)]
fn atomic_increment(word: *mut u64) {
    #[cfg(target_arch = "bpf")]
    unsafe {
        use core::intrinsics::{atomic_xadd, AtomicOrdering::SeqCst};
        atomic_xadd::<u64, u64, { SeqCst }>(word, 1)
    };
    #[cfg(not(target_arch = "bpf"))]
    let _ = word;
}

/// `tcp_receive_reset(struct sock *sk)`
#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    reset_event(Typed(sk), kind::RESET_RECEIVED, 0);
    0
}

/// `tcp_send_reset(const struct sock *sk, const struct sk_buff *skb[, enum sk_rst_reason])`:
/// `sk` is NULL for resets that answer a segment no socket owns.
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: BtfTracePointContext) -> i32 {
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

/// An event about a socket that does not change its state (`current`).
fn note(sk: impl Sock, event_kind: u8, current: u8, reason: u8, tcp_flags: u8) {
    let owner = unsafe { OWNERS.get(sk.addr()) }.unwrap_or(&NO_OWNER);
    emit(sk, owner, event_kind, current, current, reason, tcp_flags);
}

/// `tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb, int err)`: only
/// while closing, where a retransmission is usually the FIN that did not get through.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: BtfTracePointContext) -> i32 {
    let sk = Typed(ctx.arg(0));
    let skb = Typed(ctx.arg(1));
    let Some(current) = sk.field::<u8>(config!(layout.state)) else {
        return 0;
    };
    if matches!(current, state::FIN_WAIT1 | state::CLOSING | state::LAST_ACK) {
        let flags: u8 = skb.field(config!(layout.skb_tcp_flags)).unwrap_or(0);
        note(sk, kind::RETRANSMIT, current, 0, flags);
    }
    0
}

/// `syscalls:sys_exit_accept4` and `syscalls:sys_exit_accept`: the returned descriptor now
/// belongs to the calling process. Follows current->files->fdt->fd[ret]->private_data->sk.
#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let offset = config!(layout.accept_ret) as usize;
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(offset) }) else {
        return 0;
    };
    if ret >= 0 {
        if let Some((sk, current)) = socket_of_fd(ret as u64) {
            let owner = record_owner(&ctx, sk.addr(), owner_source::ACCEPT);
            // Read only once the owner is visible to a FIN landing now (`owner_behind_fin`).
            full_barrier();
            let shutdown: u8 = sk.field(config!(layout.shutdown)).unwrap_or(0);
            // Its closing transitions went out, or may be going out, without an owner.
            if current != state::ESTABLISHED || shutdown & sock_flags::RCV_SHUTDOWN != 0 {
                emit(sk, &owner, kind::OWNER, current, current, 0, 0);
            }
        }
    }
    0
}

/// The live TCP socket behind `fd` and its state.
fn socket_of_fd(fd: u64) -> Option<(Untyped, u8)> {
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, config!(layout.task_files))?;
    let fdt: u64 = read(files, config!(layout.files_fdt))?;
    let max_fds: u32 = read(fdt, config!(layout.fdt_max_fds))?;
    if fd >= max_fds as u64 {
        return None;
    }
    let fd_array: u64 = read(fdt, config!(layout.fdt_fd))?;
    let file: u64 = read(fd_array + fd * 8, 0)?;
    let socket: u64 = read(file, config!(layout.file_private_data))?;
    let sk = Untyped(read(socket, config!(layout.socket_sk))?);
    // accept() also serves Unix and other sockets: keep only live TCP ones, whose CLOSE
    // transition will remove the entry again.
    let current: u8 = sk.field(config!(layout.state))?;
    (is_tcp(sk)? && current != state::CLOSE).then_some((sk, current))
}

/// Records the current process as the owner of `sk` and returns it (for the event at hand
/// even when the table is full).
fn record_owner(ctx: &impl EbpfContext, sk: u64, source: u8) -> Owner {
    let mut slot = MaybeUninit::<Owner>::uninit();
    let owner = slot.as_mut_ptr();
    // See `set!` for why field by field.
    let owner = unsafe {
        set!(owner.pid = current_pid());
        set!(owner.source = source);
        zero(addr_of_mut!((*owner)._pad));
        current_comm(&mut (*owner).comm);
        slot.assume_init()
    };
    // Counted every time; said once per CPU, so a full table cannot flood the log.
    if OWNERS.insert(sk, owner, 0).is_err() && count(counter::LOST_OWNERS) == 0 {
        warn!(
            ctx,
            "owner table full: new sockets get no owner (raise --max-sockets)"
        );
    }
    owner
}

/// close() or shutdown(): the current process owns `sk`. Usually that is already known
/// (from connect or accept) and nothing is written.
fn confirm_owner(ctx: &impl EbpfContext, sk: u64) -> Owner {
    let pid = current_pid();
    match unsafe { OWNERS.get(sk) } {
        Some(owner) if owner.pid == pid => *owner,
        _ => record_owner(ctx, sk, owner_source::CLOSE),
    }
}

/// The process (tgid) running now.
#[inline(always)]
fn current_pid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

fn read<T>(base: u64, offset: u32) -> Option<T> {
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }.ok()
}

/// A `struct sock` to read fields from.
trait Sock: Copy {
    fn addr(self) -> u64;
    /// A field of `struct sock` itself.
    fn field<T: Copy>(self, offset: u32) -> Option<T>;
    /// A field beyond `struct sock` (in `inet_sock`) or inside a nested array.
    fn outer<T>(self, offset: u32) -> Option<T> {
        read(self.addr(), offset)
    }
    /// The object a pointer field points to, readable the same way.
    fn deref(self, offset: u32) -> Option<Self>;
}

/// A BTF-typed pointer from a BTF tracepoint: the verifier checks each load against the
/// kernel's types, so plain loads are safe and much cheaper than `bpf_probe_read_kernel`.
#[derive(Clone, Copy)]
struct Typed(*const u8);

impl Sock for Typed {
    fn addr(self) -> u64 {
        self.0 as u64
    }
    #[inline(always)]
    fn field<T: Copy>(self, offset: u32) -> Option<T> {
        Some(unsafe { read_volatile(self.0.add(offset as usize) as *const T) })
    }
    fn deref(self, offset: u32) -> Option<Self> {
        let pointer: *const u8 = self.field(offset)?;
        (!pointer.is_null()).then_some(Typed(pointer))
    }
}

/// An address found by following pointers: only `bpf_probe_read_kernel` may read it.
#[derive(Clone, Copy)]
struct Untyped(u64);

impl Sock for Untyped {
    fn addr(self) -> u64 {
        self.0
    }
    fn field<T: Copy>(self, offset: u32) -> Option<T> {
        read(self.0, offset)
    }
    fn deref(self, offset: u32) -> Option<Self> {
        let pointer: u64 = self.field(offset)?;
        (pointer != 0).then_some(Untyped(pointer))
    }
}

fn is_tcp(sk: impl Sock) -> Option<bool> {
    let protocol = if config!(layout.protocol_size) == 1 {
        sk.field::<u8>(config!(layout.protocol))? as u16
    } else {
        sk.field::<u16>(config!(layout.protocol))?
    };
    Some(protocol == IPPROTO_TCP)
}

/// Sends one event about `sk` to user space, applying the filters cheapest first: nothing
/// for a socket that is not TCP or is filtered out. Everything is read before the ring slot
/// is reserved, then written into it in place (no copy of the event on the stack).
#[inline(always)]
fn emit(
    sk: impl Sock,
    owner: &Owner,
    event_kind: u8,
    oldstate: u8,
    newstate: u8,
    reason: u8,
    tcp_flags: u8,
) -> Option<()> {
    let filters = config!(filters);
    let family: u16 = sk.field(config!(layout.family))?;
    match family {
        AF_INET if filters & filter::IPV6_ONLY == 0 => {}
        AF_INET6 if filters & filter::IPV4_ONLY == 0 => {}
        _ => return None,
    }
    if !is_tcp(sk)? {
        return None;
    }
    let sport = u16::from_be(sk.outer(config!(layout.sport))?);
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
    let sock_flags = sock_flags(sk);
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let task_pid = current_pid();

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
        zero(addr_of_mut!((*event)._pad2));
    }
    slot.submit(wakeup);
    Some(())
}

/// `set!(event.field = value)`: one store that LLVM may not merge with its neighbours.
macro_rules! set {
    ($event:ident . $field:ident = $value:expr) => {
        addr_of_mut!((*$event).$field).write_volatile($value)
    };
}
use set;

/// The current task's name, written in place (the helper pads with zeros).
#[inline(always)]
fn current_comm(dst: &mut [u8; COMM_LEN]) {
    unsafe { generated::bpf_get_current_comm(dst.as_mut_ptr().cast(), COMM_LEN as u32) };
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
unsafe fn zero<const N: usize>(dst: *mut [u8; N]) {
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

fn sock_flags(sk: impl Sock) -> u8 {
    let shutdown: u8 = sk.field(config!(layout.shutdown)).unwrap_or(0);
    let flags: u64 = sk.field(config!(layout.flags)).unwrap_or(0);
    let bit = |n: u32| (flags >> (n & 63)) & 1 == 1;
    let mut out = shutdown & (sock_flags::RCV_SHUTDOWN | sock_flags::SEND_SHUTDOWN);
    if bit(config!(layout.flag_done)) {
        out |= sock_flags::FIN_RECEIVED;
    }
    if bit(config!(layout.flag_dead)) {
        out |= sock_flags::ORPHAN;
    }
    out
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
/// because a wakeup per event is what costs most (MACHINE.md).
fn wakeup_flag() -> u64 {
    let flag = if EVENTS.query(BPF_RB_AVAIL_DATA.into()) >= config!(wakeup_bytes) as u64 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    flag.into()
}

/// Adds one to a per-CPU counter; returns its value before. Atomic: a nested run on the
/// same CPU may be counting too.
fn count(index: u32) -> u64 {
    let Some(value) = COUNTERS.get_ptr_mut(index) else {
        return 0;
    };
    let before = unsafe { read_volatile(value) };
    atomic_increment(value);
    before
}

/// Built for the host only by workspace-wide commands: the programs are for the BPF target.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
