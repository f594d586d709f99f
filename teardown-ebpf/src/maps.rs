//! The maps user space reads or fills, and the per-CPU counters of what could not be
//! recorded.

use core::ptr::read_volatile;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_smp_processor_id},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use teardown_common::{counter, Owner};

/// Default size; user space sets the real one before loading.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// `counter::*`: what could not be recorded is counted and reported, never silent.
/// `counter::PER_CPU` slots per CPU number; user space sizes it. User space maps it and
/// reads it without a system call: a map syscall raises the CPU's `bpf_prog_active` while
/// it runs (preemptible on a kernel that preempts kernel code), and every classic
/// tracepoint program is skipped on that CPU meanwhile.
#[map]
pub static COUNTERS: Array<u64> = Array::with_max_entries(counter::PER_CPU, BPF_F_MMAPABLE);

/// `BPF_F_MMAPABLE`: user space may map an array's values.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Port filter: port → the `filter::PORT_*` roles it is wanted in. User space sizes it.
#[map]
pub static PORTS: HashMap<u16, u32> = HashMap::with_max_entries(1024, 0);

/// Owner filter: tgid → 1. User space sizes it.
#[map]
pub static PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// Per thread (one slot per thread id modulo `HANDLED_SLOTS`): the transition
/// `inet_sock_set_state` handled last in that thread, as `[socket, transition, scratch]`
/// and padding to a cache line (see `inet_sock_set_state_nested`). Per thread, because
/// where the kernel preempts the twins another task's transition must not overwrite the
/// mark a twin has yet to read; not per CPU, because there a task may also move to another
/// CPU between the programs. Read back from a map, a socket's address is a plain number
/// the programs may compare.
#[map]
pub static HANDLED: Array<[u64; 8]> = Array::with_max_entries(HANDLED_SLOTS, 0);

/// Threads that can hold marks at once without colliding (2 MiB of marks): the threads
/// between the state program and its twins at one moment rarely share one modulo this.
pub const HANDLED_SLOTS: u32 = 1 << 15;

/// The current thread's slot in `HANDLED`. Every CPU's idle task is thread 0, and a
/// softirq there runs as it: those take their CPU's number (idle tasks never move).
#[inline(always)]
pub fn handled_slot() -> Option<*mut [u64; 8]> {
    let thread = bpf_get_current_pid_tgid() as u32;
    let slot = if thread == 0 {
        unsafe { bpf_get_smp_processor_id() }
    } else {
        thread
    };
    HANDLED.get_ptr_mut(slot % HANDLED_SLOTS)
}

/// The word `owner::full_barrier` updates: per CPU, so that no two CPUs fight over it.
#[map]
pub static FENCE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Socket address → owner. An entry lives from connect/listen/accept until the socket's
/// transition to CLOSE, so the table holds only live sockets. Preallocated: no allocation
/// per connection. User space sizes it (`--max-sockets`).
#[map]
pub static OWNERS: HashMap<u64, Owner> = HashMap::with_max_entries(1 << 18, 0);

/// Socket inode → owner, for the sockets the snapshot found open as tracing started.
/// An entry moves into `OWNERS` the first time its socket needs an owner. Filled by user
/// space, which sizes it; not preallocated, so an unused table costs nothing.
#[map]
pub static SEEDED: HashMap<u64, Owner> = HashMap::with_max_entries(1 << 17, BPF_F_NO_PREALLOC);

/// `BPF_F_NO_PREALLOC`: entries are allocated as they are inserted.
const BPF_F_NO_PREALLOC: u32 = 1;

/// Adds one to a per-CPU counter; returns its value before. Atomic: a nested run on the
/// same CPU may be counting too.
pub fn count(index: u32) -> u64 {
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(value) = COUNTERS.get_ptr_mut(cpu * counter::PER_CPU + index) else {
        return 0;
    };
    let before = unsafe { read_volatile(value) };
    atomic_increment(value);
    before
}

/// Atomic even against a nested run on the same CPU.
#[inline(always)]
pub fn atomic_increment(word: *mut u64) {
    #[cfg(target_arch = "bpf")]
    unsafe {
        use core::intrinsics::{atomic_xadd, AtomicOrdering::SeqCst};
        atomic_xadd::<u64, u64, { SeqCst }>(word, 1)
    };
    #[cfg(not(target_arch = "bpf"))]
    let _ = word;
}
