//! Which process owns a socket. The owner is recorded at the moments that run in the owning
//! process: connect() and listen() (transitions into SYN_SENT and LISTEN), close() and
//! shutdown() (the only calls that move a socket into FIN_WAIT1 or LAST_ACK), and accept()
//! (`programs::accept`).

use core::mem::MaybeUninit;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, generated},
    EbpfContext,
};
use aya_log_ebpf::warn;
use teardown_common::{counter, owner_source, Owner, SockLayout, COMM_LEN};

use crate::{
    emit::zero,
    maps::{atomic_increment, count, FENCE, OWNERS, SEEDED},
    sock::{read, Sock},
};

/// What a hash map update returns when its bucket is locked on this CPU already.
const EBUSY: i64 = 16;

/// The owner of a socket not in `OWNERS` (pid 0 is never a process that owns a socket).
pub static NO_OWNER: Owner = Owner {
    pid: 0,
    source: owner_source::UNKNOWN,
    time_wait_sender: 0,
    _pad: [0; 2],
    comm: [0; COMM_LEN],
};

/// Records the current process (`pid`, from `current_pid`) as the owner of `sk` and returns
/// it (for the event at hand even when the table is full).
pub fn record(ctx: &impl EbpfContext, sk: u64, source: u8, pid: u32) -> Owner {
    let mut slot = MaybeUninit::<Owner>::uninit();
    let owner = slot.as_mut_ptr();
    // Field by field, as events are (see `emit::emit`).
    let owner = unsafe {
        set!(owner.pid = pid);
        set!(owner.source = source);
        set!(owner.time_wait_sender = 0);
        zero(core::ptr::addr_of_mut!((*owner)._pad));
        current_comm(&mut (*owner).comm);
        slot.assume_init()
    };
    // Counted every time; a full table is said once per CPU, so it cannot flood the log.
    // EBUSY is no full table: the run interrupted, on this CPU, one holding the same
    // bucket's lock (a softirq transition during another), which a larger table won't fix.
    if let Err(error) = OWNERS.insert(sk, owner, 0) {
        if count(counter::LOST_OWNERS) == 0 && i64::from(error) != -EBUSY {
            warn!(
                ctx,
                "owner table full: new sockets get no owner (raise --max-sockets)"
            );
        }
    }
    owner
}

/// close() or shutdown(): the current process (`pid`) owns `sk`. Usually that is already
/// known (from connect, accept or the snapshot) and nothing is written.
pub fn confirm(ctx: &impl EbpfContext, sk: impl Sock, pid: u32) -> Owner {
    let key = sk.addr();
    match unsafe { OWNERS.get(key) }.or_else(|| seeded(sk)) {
        Some(owner) if owner.pid == pid => *owner,
        _ => record(ctx, key, owner_source::CLOSE, pid),
    }
}

/// A socket open before tracing started, which no call recorded since: its owner as the
/// snapshot found it, by the socket's inode. Moved into `OWNERS`, so it is looked up once.
pub fn seeded(sk: impl Sock) -> Option<&'static Owner> {
    if config!(layout.inode_ino) == SockLayout::NONE {
        return None;
    }
    let inode: u64 = sk
        .deref(config!(layout.sk_socket))?
        .deref(config!(layout.socket_file))?
        .deref(config!(layout.file_inode))?
        .field(config!(layout.inode_ino))?;
    let owner = *unsafe { SEEDED.get(inode) }?;
    let _ = SEEDED.remove(inode);
    OWNERS.insert(sk.addr(), owner, 0).ok()?;
    unsafe { OWNERS.get(sk.addr()) }
}

/// A FIN can land on a socket while accept() is handing it out, on another CPU. `tcp_fin()`
/// sets RCV_SHUTDOWN before the transition that calls us, and `sys_exit_accept` records
/// the owner before it reads RCV_SHUTDOWN: with a full barrier between each side's write
/// and its read, at least one side sees the other's. Either this second look finds the
/// owner, or accept() sees the FIN and says who the owner is in an OWNER event.
pub fn behind_fin(key: u64) -> Option<&'static Owner> {
    full_barrier();
    unsafe { OWNERS.get(key) }
}

/// BPF has no fence instruction, so an atomic add stands in: the x86-64 JIT makes it a
/// `lock add`, a full barrier. (Only the value-returning form is ordered on every
/// architecture, and the BPF CPU version aya-build compiles for, v1, lacks it.)
#[inline(always)]
pub fn full_barrier() {
    if let Some(word) = FENCE.get_ptr_mut(0) {
        atomic_increment(word);
    }
}

/// The process (tgid) running now, as the tracer's pid namespace numbers it: what `-p`
/// takes and the output shows.
#[inline(always)]
pub fn current_pid() -> u32 {
    if config!(pid_namespace) == 0 {
        // The initial namespace: the helper's pids are already its own.
        return (bpf_get_current_pid_tgid() >> 32) as u32;
    }
    pid_in_tracer_namespace().unwrap_or(0)
}

/// Pid namespaces nest at most this deep (the kernel's `MAX_PID_NS_LEVEL`).
const MAX_PID_NS_LEVEL: u32 = 32;

/// The kernel's `task_tgid_nr_ns(current, tracer's namespace)`, read at BTF offsets: the
/// process's `struct pid` has one number per namespace level from the initial one down to
/// its own; the one whose namespace is the tracer's is the pid there. None when the process
/// is outside it (the host's or a sibling container's: no pid there). Searched from the
/// process's own level up, so a process in the tracer's namespace is found at once.
/// (`bpf_get_ns_current_pid_tgid` gives a pid only for tasks whose own namespace is the one
/// asked about, none for a process in a container nested inside the tracer's.)
fn pid_in_tracer_namespace() -> Option<u32> {
    let task = unsafe { bpf_get_current_task() };
    let leader: u64 = read(task, config!(layout.task_group_leader))?;
    let pid: u64 = read(leader, config!(layout.task_thread_pid))?;
    let level: u32 = read(pid, config!(layout.pid_level))?;
    let numbers = pid + config!(layout.pid_numbers) as u64;
    let wanted = config!(pid_namespace);
    for above in 0..=MAX_PID_NS_LEVEL {
        if above > level {
            break;
        }
        let upid = numbers + (level - above) as u64 * config!(layout.upid_size) as u64;
        let namespace: u64 = read(upid, config!(layout.upid_ns))?;
        if read::<u32>(namespace, config!(layout.pidns_inum))? == wanted {
            return read::<i32>(upid, config!(layout.upid_nr)).map(|nr| nr as u32);
        }
    }
    None
}

/// The current task's name, written in place (the helper pads with zeros).
#[inline(always)]
pub fn current_comm(dst: &mut [u8; COMM_LEN]) {
    unsafe { generated::bpf_get_current_comm(dst.as_mut_ptr().cast(), COMM_LEN as u32) };
}
