//! Stop signals, caught from the first instruction of `main` on: SIGINT, SIGTERM and SIGHUP
//! (a closed terminal, a lost SSH session) all end a run cleanly, even one that is still
//! starting. The handler only notes the signal and writes a byte to a pipe that the run's
//! loop watches.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::atomic::{AtomicI32, Ordering},
};

/// The pipe's write end, for the handler; -1 until installed.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// The first stop signal caught, 0 for none.
static CAUGHT: AtomicI32 = AtomicI32::new(0);

const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(signal: libc::c_int) {
    let _ = CAUGHT.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; a full pipe already wakes the reader.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

/// The stop signal caught so far, if any (for code that does not hold the pipe).
pub fn caught() -> Option<libc::c_int> {
    Some(CAUGHT.load(Ordering::SeqCst)).filter(|&s| s != 0)
}

/// The read end of the wake-up pipe: readable once a stop signal came.
pub struct StopSignals {
    read: OwnedFd,
}

impl StopSignals {
    /// Installs the handlers. Call first thing in `main`.
    pub fn install() -> io::Result<StopSignals> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and belong to us; the write end lives
        // for the whole process (the handler may run at any time).
        let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
        WAKE_FD.store(fds[1], Ordering::SeqCst);
        for signal in STOP_SIGNALS {
            // SAFETY: a zeroed sigaction with a handler that only touches atomics and
            // calls write(2).
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(StopSignals { read })
    }

    /// The stop signal caught so far, if any.
    pub fn caught(&self) -> Option<libc::c_int> {
        caught()
    }
}

impl AsRawFd for StopSignals {
    fn as_raw_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}
