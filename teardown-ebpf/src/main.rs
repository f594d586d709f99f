//! The kernel side of teardown: kept small on purpose, one file per concern.
//!
//! - [`programs`]: the hooks, one small file per probe family. `inet_sock_set_state` turns
//!   every TCP state transition into an event; the reset, retransmit and accept hooks add
//!   what transitions alone cannot tell.
//! - [`maps`]: the maps shared with user space, and the per-CPU counters.
//! - [`sock`]: reading a `struct sock` at the offsets user space found in this kernel's BTF.
//! - [`owner`]: which process owns a socket (most transitions run in softirq, often in the
//!   *peer's* process on loopback, so the current task is not the owner).
//! - [`emit`]: filters, then one event written in place into the ring buffer.
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

/// Reads one field of `CONFIG` so that the verifier sees a constant from frozen `.rodata`.
macro_rules! config {
    ($($field:tt)+) => {
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!($crate::config::CONFIG.$($field)+)) }
    };
}

/// `set!(event.field = value)`: one store that LLVM may not merge with its neighbours (see
/// `emit::emit`).
macro_rules! set {
    ($event:ident . $field:ident = $value:expr) => {
        core::ptr::addr_of_mut!((*$event).$field).write_volatile($value)
    };
}

mod config;
mod emit;
mod maps;
mod owner;
mod programs;
mod sock;

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
