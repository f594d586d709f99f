//! Reading a `struct sock` at the offsets user space found in this kernel's BTF.

use core::ptr::read_volatile;

use aya_ebpf::helpers::bpf_probe_read_kernel;
use teardown_common::{seq_flags, sock_flags, SockLayout, IPPROTO_TCP};

pub fn read<T>(base: u64, offset: u32) -> Option<T> {
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }.ok()
}

/// A `struct sock` to read fields from.
pub trait Sock: Copy {
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
pub struct Typed(pub *const u8);

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
pub struct Untyped(pub u64);

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

pub fn is_tcp(sk: impl Sock) -> Option<bool> {
    let protocol = if config!(layout.protocol_size) == 1 {
        sk.field::<u8>(config!(layout.protocol))? as u16
    } else {
        sk.field::<u16>(config!(layout.protocol))?
    };
    Some(protocol == IPPROTO_TCP)
}

/// `sock_flags::*`: the socket's shutdown bits, SOCK_DONE and SOCK_DEAD.
pub fn flags(sk: impl Sock) -> u8 {
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

/// A TCP socket's sequence numbers and ACK state (`seq_flags::*`); all zero when this kernel
/// lacks the fields.
#[derive(Clone, Copy, Default)]
pub struct SeqState {
    pub snd_una: u32,
    pub snd_nxt: u32,
    pub write_seq: u32,
    pub rcv_nxt: u32,
    pub flags: u8,
}

/// The program's `struct sock *` is the start of a `tcp_sock` for TCP: the fields past
/// `struct sock` are read with `outer`.
#[inline(always)]
pub fn seq_state(sk: impl Sock) -> SeqState {
    if config!(layout.snd_una) == SockLayout::NONE {
        return SeqState::default();
    }
    let seq = |offset: u32| sk.outer::<u32>(offset).unwrap_or(0);
    let pending: u8 = sk.outer(config!(layout.ack_pending)).unwrap_or(0);
    let pingpong: u8 = sk.outer(config!(layout.ack_pingpong)).unwrap_or(0);
    let mut flags = seq_flags::KNOWN;
    if u32::from(pending) & config!(layout.ack_sched_bit) != 0 {
        flags |= seq_flags::ACK_SCHEDULED;
    }
    if u32::from(pending) & config!(layout.ack_timer_bit) != 0 {
        flags |= seq_flags::ACK_TIMER;
    }
    if pingpong != 0 {
        flags |= seq_flags::PINGPONG;
    }
    SeqState {
        snd_una: seq(config!(layout.snd_una)),
        snd_nxt: seq(config!(layout.snd_nxt)),
        write_seq: seq(config!(layout.write_seq)),
        rcv_nxt: seq(config!(layout.rcv_nxt)),
        flags,
    }
}
