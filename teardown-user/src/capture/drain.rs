//! The drain: a thread that only moves events out of the ring buffer into user space, so
//! that the ring never overflows while the events are being handled.
//!
//! It runs as a real-time task (SCHED_FIFO), which the scheduler runs the moment the
//! kernel wakes it, however busy the host: in a storm of closes, eight busy processes
//! starved a consumer that handled events at normal priority until the ring overflowed
//! (81 % of 400,000 events lost). Moving an event costs a copy, so the real-time thread
//! takes little from the workload; the handling, which costs more, runs politely on the
//! main thread. Events wait in between (at most `max_waiting`); only beyond that does the
//! ring fill and events get lost, counted by the kernel.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use teardown_common::Event;

/// How long the drain sleeps when the kernel has not woken it: bounds the delay before an
/// event reaches user space at light load.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

pub struct Drain {
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    batches: mpsc::Receiver<Vec<Event>>,
    /// Events moved out of the ring and not handled yet.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    /// Readable after each batch the drain sends.
    wake: OwnedFd,
    /// Why the drain does not run at real-time priority, when it does not.
    pub not_real_time: Option<io::Error>,
}

impl Drain {
    pub fn start(ring: RingBuf<MapData>, max_waiting: usize) -> io::Result<Drain> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both were just created and are ours alone.
        let (wake, signal) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let stop = Arc::new(AtomicBool::new(false));
        let waiting = Arc::new(AtomicUsize::new(0));
        let (sender, batches) = mpsc::channel();
        let (started, priority) = mpsc::channel();
        let worker = Worker {
            ring,
            stop: stop.clone(),
            waiting: waiting.clone(),
            max_waiting,
            sender,
            signal,
        };
        let thread = std::thread::Builder::new()
            .name("teardown-drain".into())
            .spawn(move || {
                let _ = started.send(real_time());
                worker.run();
            })?;
        let not_real_time = priority.recv().unwrap_or(Ok(())).err();
        Ok(Drain {
            thread: Some(thread),
            stop,
            batches,
            waiting,
            max_waiting,
            wake,
            not_real_time,
        })
    }

    /// Hands every event the drain has moved so far to `sink`, in order; returns how many.
    pub fn receive(&self, mut sink: impl FnMut(&Event)) -> usize {
        let mut count = 0;
        while let Ok(batch) = self.batches.try_recv() {
            batch.iter().for_each(&mut sink);
            self.waiting.fetch_sub(batch.len(), Ordering::SeqCst);
            count += batch.len();
        }
        count
    }

    /// Empties the wake-up pipe, so that the next batch wakes the reader again.
    pub fn clear_wake(&self) {
        let mut buf = [0u8; 256];
        // SAFETY: read(2) into a buffer we own, from a non-blocking pipe we own.
        while unsafe { libc::read(self.wake.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {
        }
    }

    /// Events moved out of the ring and not handled yet.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Whether the drain stopped taking events because too many wait.
    pub fn full(&self) -> bool {
        self.waiting() >= self.max_waiting
    }

    /// Stops the drain after one last look at the ring; what it moved is still to be
    /// received.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl AsRawFd for Drain {
    fn as_raw_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The calling thread as the lowest real-time priority: above every normal task, below
/// every real-time one.
fn real_time() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sched_setscheduler on the calling thread with a parameter we own.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

struct Worker {
    ring: RingBuf<MapData>,
    stop: Arc<AtomicBool>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    sender: mpsc::Sender<Vec<Event>>,
    signal: OwnedFd,
}

impl Worker {
    fn run(mut self) {
        loop {
            let mut ring = libc::pollfd {
                fd: self.ring.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll(2) on one pollfd we own.
            unsafe { libc::poll(&mut ring, 1, POLL_INTERVAL.as_millis() as i32) };
            let stopping = self.stop.load(Ordering::SeqCst);
            let room = self
                .max_waiting
                .saturating_sub(self.waiting.load(Ordering::SeqCst));
            let mut batch = Vec::new();
            while batch.len() < room {
                let Some(item) = self.ring.next() else { break };
                if item.len() >= size_of::<Event>() {
                    // SAFETY: the kernel wrote a whole `Event`; read_unaligned does not
                    // rely on the ring's 8-byte alignment.
                    batch.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) });
                }
            }
            if !batch.is_empty() {
                self.waiting.fetch_add(batch.len(), Ordering::SeqCst);
                if self.sender.send(batch).is_err() {
                    return;
                }
                // SAFETY: write(2) of one byte; a full pipe already wakes the reader.
                unsafe { libc::write(self.signal.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
            }
            if stopping {
                return;
            }
        }
    }
}
