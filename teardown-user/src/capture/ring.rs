//! The ring buffer's consumer side, with its data mapped once.
//!
//! aya's `RingBuf` maps the data area twice, back to back (as libbpf does, so that a
//! record that wraps reads in one piece), and both mappings count in the process's RSS:
//! 32 MiB of RSS for the default 16 MiB ring, which is 16 MiB of memory. Here the data is
//! mapped once, and the rare record that wraps (at most one per lap) is copied in two
//! pieces. The protocol is the kernel's (`kernel/bpf/ringbuf.c`): an 8-byte header per
//! record, its length with a busy and a discard bit, records 8-byte aligned.

use std::{
    io,
    mem::{size_of, MaybeUninit},
    os::fd::{AsFd, AsRawFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use aya::maps::MapData;
use teardown_common::Event;

/// `BPF_RINGBUF_BUSY_BIT`: the record is reserved, not yet committed.
const BUSY: u32 = 1 << 31;
/// `BPF_RINGBUF_DISCARD_BIT`: the record was discarded; skip it.
const DISCARD: u32 = 1 << 30;
/// `BPF_RINGBUF_HDR_SZ`.
const HEADER: usize = 8;

pub struct Ring {
    map: MapData,
    /// The consumer page (read-write): the consumer position.
    consumer: Mapping,
    /// The producer page (read-only: the producer position), then the data, once.
    producer: Mapping,
    page: usize,
    /// Data bytes: a power of two.
    size: usize,
    /// Where the next record starts, as the consumer position counts.
    position: u64,
}

// SAFETY: the mappings belong to this value alone; it moves to the drain's thread whole.
unsafe impl Send for Ring {}

impl Ring {
    pub fn new(map: MapData) -> io::Result<Ring> {
        let size = map
            .info()
            .map_err(|e| io::Error::other(e.to_string()))?
            .max_entries() as usize;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        if !size.is_power_of_two() || size < page {
            return Err(io::Error::other(format!("ring of {size} bytes")));
        }
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + size, libc::PROT_READ, page)?;
        let mut ring = Ring {
            map,
            consumer,
            producer,
            page,
            size,
            position: 0,
        };
        ring.position = ring.consumer_position().load(Ordering::Acquire);
        Ok(ring)
    }

    fn consumer_position(&self) -> &AtomicU64 {
        // SAFETY: the page starts with the kernel's u64 consumer position, 8-byte aligned.
        unsafe { self.consumer.ptr.cast::<AtomicU64>().as_ref() }
    }

    fn producer_position(&self) -> &AtomicU64 {
        // SAFETY: as above, in the producer page.
        unsafe { self.producer.ptr.cast::<AtomicU64>().as_ref() }
    }

    fn data(&self, offset: usize) -> *const u8 {
        // SAFETY: offset < size: within the mapping, past the producer page.
        unsafe { self.producer.ptr.as_ptr().add(self.page + offset) }
    }

    /// The next committed event, its space handed back to the kernel; `None` when no more
    /// is committed yet. Discarded records and records too short to be an event are
    /// skipped.
    pub fn next(&mut self) -> Option<Event> {
        loop {
            if self.position >= self.producer_position().load(Ordering::Acquire) {
                return None;
            }
            let at = self.position as usize & (self.size - 1);
            // SAFETY: headers are 8-byte aligned and never wrap (the size is a multiple
            // of 8); the kernel commits one with a release store.
            let header = unsafe { &*self.data(at).cast::<AtomicU32>() }.load(Ordering::Acquire);
            if header & BUSY != 0 {
                return None;
            }
            let len = (header & !(BUSY | DISCARD)) as usize;
            let event = (header & DISCARD == 0 && len >= size_of::<Event>())
                .then(|| self.copy_out((at + HEADER) & (self.size - 1)));
            self.position += (HEADER + len).next_multiple_of(8) as u64;
            self.consumer_position()
                .store(self.position, Ordering::Release);
            if event.is_some() {
                return event;
            }
        }
    }

    /// Whether a record is reserved past those `next` handed out, not committed yet.
    pub fn head_busy(&self) -> bool {
        self.position < self.producer_position().load(Ordering::Acquire)
    }

    /// The event whose bytes start at `at`, in two pieces when it wraps.
    fn copy_out(&self, at: usize) -> Event {
        let mut event = MaybeUninit::<Event>::uninit();
        let out = event.as_mut_ptr().cast::<u8>();
        let first = size_of::<Event>().min(self.size - at);
        // SAFETY: both pieces lie within the data mapping and within `event`; every bit
        // pattern is a valid `Event` (plain integers and arrays).
        unsafe {
            std::ptr::copy_nonoverlapping(self.data(at), out, first);
            std::ptr::copy_nonoverlapping(self.data(0), out.add(first), size_of::<Event>() - first);
            event.assume_init()
        }
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}

/// A shared mapping of a map's memory, unmapped when dropped.
pub(super) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    pub(super) fn new(
        fd: RawFd,
        len: usize,
        protection: i32,
        offset: usize,
    ) -> io::Result<Mapping> {
        // SAFETY: a new shared mapping of a descriptor we hold; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                protection,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?,
            len,
        })
    }

    pub(super) fn ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
