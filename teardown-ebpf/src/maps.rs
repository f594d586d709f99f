//! The maps user space reads or fills, and the per-CPU counters of what could not be
//! recorded.

use core::ptr::read_volatile;

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use teardown_common::{counter, Owner};

/// Default size; user space sets the real one before loading.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// `counter::*`: what could not be recorded is counted and reported, never silent.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Port filter: port → the `filter::PORT_*` roles it is wanted in. User space sizes it.
#[map]
pub static PORTS: HashMap<u16, u32> = HashMap::with_max_entries(1024, 0);

/// Owner filter: tgid → 1. User space sizes it.
#[map]
pub static PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// Per CPU: the transition `inet_sock_set_state` handled last, as `[socket, transition,
/// scratch]` (see `inet_sock_set_state_nested`). Read back from a map, a socket's address
/// is a plain number the programs may compare.
#[map]
pub static HANDLED: PerCpuArray<[u64; 3]> = PerCpuArray::with_max_entries(1, 0);

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
    let Some(value) = COUNTERS.get_ptr_mut(index) else {
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
