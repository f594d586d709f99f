//! Running short of memory or file descriptors ends the run with one line that says so,
//! never a backtrace or a message about whatever happened to fail first.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    io,
};

use crate::error::{Error, Result};

/// Descriptors a live trace holds (its maps, programs, links, ring buffer, runtime and
/// outputs: 39 seen here), with room for the snapshot entering network namespaces.
pub const LIVE_DESCRIPTORS: u64 = 64;
/// Descriptors a replay holds (13 to 16 seen here), with room.
pub const REPLAY_DESCRIPTORS: u64 = 32;
/// Address space a live trace needs (`ulimit -v`) besides its ring buffer's mapping. Below
/// about 50 MB (with a 4 MiB ring) it cannot load and
/// start (measured here, debug and release builds), and near 43 MB glibc itself aborted a
/// new thread ("failed to register TLS destructor") before any error of ours could be said:
/// so a lower limit is refused up front.
pub const LIVE_ADDRESS_SPACE: u64 = 64 << 20;

/// Makes sure `needed` descriptors can be open at once, before anything fails half-way
/// (tokio's signal set-up panics when it cannot get its pipe).
pub fn ensure_descriptors(needed: u64) -> Result<()> {
    match too_low(libc::RLIMIT_NOFILE, needed)? {
        Some(limit) => Err(Error::Descriptors { limit, needed }),
        None => Ok(()),
    }
}

/// Makes sure the address space can grow to `needed` bytes, before a thread fails half-way.
pub fn ensure_address_space(needed: u64) -> Result<()> {
    match too_low(libc::RLIMIT_AS, needed)? {
        Some(limit) => Err(Error::AddressSpace {
            limit_kib: limit >> 10,
            needed_kib: needed >> 10,
        }),
        None => Ok(()),
    }
}

/// Raises `resource`'s soft limit up to the hard one if it is below `needed`; the hard
/// limit when that is too low itself.
fn too_low(resource: libc::__rlimit_resource_t, needed: u64) -> io::Result<Option<u64>> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we own.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur >= needed {
        return Ok(None);
    }
    if limit.rlim_max < needed {
        return Ok(Some(limit.rlim_max));
    }
    limit.rlim_cur = needed;
    // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard one
    // needs no privilege.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(None)
}

/// An OS error, diagnosed where running short of something is its cause.
pub fn diagnosed(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::ENOMEM) => format!("out of memory ({error})"),
        Some(libc::EMFILE | libc::ENFILE) => format!("out of file descriptors ({error})"),
        _ => error.to_string(),
    }
}

/// The error of a thread that could not be started: EAGAIN there means no memory for its
/// stack, or the limit on threads reached.
pub fn thread_not_started(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::EAGAIN) => format!("out of memory or threads ({error})"),
        _ => diagnosed(error),
    }
}

/// Large blocks (from 128 KiB) always get their own mapping, returned to the system when
/// freed. glibc otherwise raises that threshold each time one is freed, after which the
/// start-up's kernel BTF (5 MB, read and parsed once) and the drain's 2 MiB batches come
/// from heaps it keeps: 12 MB more RSS from the start, for nothing. Call first thing.
pub fn return_large_blocks() {
    // SAFETY: mallopt only sets glibc's malloc parameters.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
}

/// The system allocator, except that a failed allocation ends the process with one line
/// (Rust's default aborts with a backtrace, exit 134). Installed by the binary.
pub struct OneLineOutOfMemory;

// SAFETY: every call is passed to `System` unchanged; only a null result is acted on.
unsafe impl GlobalAlloc for OneLineOutOfMemory {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        or_exit(unsafe { System.alloc(layout) }, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        or_exit(unsafe { System.alloc_zeroed(layout) }, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        or_exit(unsafe { System.realloc(ptr, layout, new_size) }, new)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn or_exit(ptr: *mut u8, layout: Layout) -> *mut u8 {
    if ptr.is_null() {
        out_of_memory(layout.size());
    }
    ptr
}

/// Says so and exits; allocates nothing (the message is built on the stack).
fn out_of_memory(size: usize) -> ! {
    let mut line = [0u8; 128];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        line[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    };
    put(b"teardown-trace: error: out of memory: ");
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = size;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    put(&digits[at..]);
    put(b" bytes could not be allocated (see ulimit -v)\n");
    // SAFETY: write(2) of a buffer we own, then _exit(2): no destructor, no allocation.
    unsafe {
        libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), len);
        libc::_exit(1)
    }
}
