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
//!
//! The drain never waits on the main thread: its batches are allocated and freed by the
//! drain alone (the main thread hands each emptied one back), and travel through bounded
//! channels that allocate nothing per message. A batch freed on the main thread takes the
//! drain's malloc arena lock; the nice-10 main thread preempted while holding it stalled
//! the real-time drain, and a CI storm lost 45,507 events to a ring that overflowed.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use teardown_common::Event;

use super::Ring;

/// How long the drain sleeps when the kernel has not woken it: bounds the delay before an
/// event reaches user space at light load.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long the drain waits for the main thread when the events waiting reach their bound.
const CATCH_UP: Duration = Duration::from_millis(1);
/// Events in one batch at most (2 MiB): a storm fills many batches, each reused.
const BATCH_EVENTS: usize = 16 * 1024;
/// Batches on their way to the main thread at most; the drain keeps filling its current
/// one while they are all in flight.
const BATCHES_IN_FLIGHT: usize = 256;
/// Batches kept for reuse after a storm; the drain frees the rest (at light load).
const BATCHES_KEPT: usize = 4;

pub struct Drain {
    thread: Option<JoinHandle<Vec<Event>>>,
    /// What the drain moved last and could not send, once it has stopped.
    unsent: Mutex<Vec<Event>>,
    stop: Arc<AtomicBool>,
    batches: mpsc::Receiver<Vec<Event>>,
    /// Emptied batches, back to the drain for reuse.
    emptied: mpsc::SyncSender<Vec<Event>>,
    /// Events moved out of the ring and not handled yet.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    /// Readable after each batch the drain sends.
    wake: OwnedFd,
    /// Why the drain does not run at real-time priority, when it does not.
    pub not_real_time: Option<io::Error>,
}

impl Drain {
    pub fn start(ring: Ring, max_waiting: usize) -> io::Result<Drain> {
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
        let (sender, batches) = mpsc::sync_channel(BATCHES_IN_FLIGHT);
        // Room for every batch there can be (those in flight, and the drain's own), so
        // that handing one back never fails and never frees it here.
        let (emptied, reusable) = mpsc::sync_channel(BATCHES_IN_FLIGHT + 1);
        let (started, priority) = mpsc::channel();
        let worker = Worker {
            ring,
            stop: stop.clone(),
            waiting: waiting.clone(),
            max_waiting,
            sender,
            reusable,
            batches: 0,
            signal,
        };
        let thread = std::thread::Builder::new()
            .name("teardown-drain".into())
            .spawn(move || {
                let _ = started.send(real_time());
                worker.run()
            })?;
        let not_real_time = priority.recv().unwrap_or(Ok(())).err();
        Ok(Drain {
            thread: Some(thread),
            unsent: Mutex::default(),
            stop,
            batches,
            emptied,
            waiting,
            max_waiting,
            wake,
            not_real_time,
        })
    }

    /// Hands every event the drain has moved so far to `sink`, in order; returns how many.
    pub fn receive(&self, mut sink: impl FnMut(&Event)) -> usize {
        let mut count = 0;
        while let Ok(mut batch) = self.batches.try_recv() {
            batch.iter().for_each(&mut sink);
            self.waiting.fetch_sub(batch.len(), Ordering::SeqCst);
            count += batch.len();
            batch.clear();
            let _ = self.emptied.try_send(batch);
        }
        let mut unsent = self.unsent.lock().unwrap_or_else(|e| e.into_inner());
        unsent.iter().for_each(&mut sink);
        self.waiting.fetch_sub(unsent.len(), Ordering::SeqCst);
        count += unsent.len();
        unsent.clear();
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
            if let Ok(unsent) = thread.join() {
                *self.unsent.lock().unwrap_or_else(|e| e.into_inner()) = unsent;
            }
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
    ring: Ring,
    stop: Arc<AtomicBool>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    sender: mpsc::SyncSender<Vec<Event>>,
    reusable: mpsc::Receiver<Vec<Event>>,
    /// Batches this thread allocated and has not freed.
    batches: usize,
    signal: OwnedFd,
}

impl Worker {
    /// Moves events until told to stop; returns what it moved last and could not send
    /// (every batch was in flight).
    fn run(mut self) -> Vec<Event> {
        let mut batch = Vec::new();
        loop {
            let mut ring = libc::pollfd {
                fd: self.ring.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll(2) on one pollfd we own.
            unsafe { libc::poll(&mut ring, 1, POLL_INTERVAL.as_millis() as i32) };
            let stopping = self.stop.load(Ordering::SeqCst);
            // The last look takes everything there is room for into one batch.
            let limit = if stopping { usize::MAX } else { BATCH_EVENTS };
            // Whether the main thread must catch up before more can move, or the ring's
            // next record is reserved and not committed yet: then the ring stays readable,
            // and polling it again at once would spin at real-time priority (starving, on
            // a kernel that runs tracepoint programs preemptible, a producer preempted on
            // this CPU in the middle of that record).
            let behind = loop {
                if batch.capacity() == 0 {
                    batch = self.empty_batch();
                }
                let room = self
                    .max_waiting
                    .saturating_sub(self.waiting.load(Ordering::SeqCst));
                let wanted = (batch.len() + room).min(limit);
                let mut emptied_ring = false;
                let before = batch.len();
                while batch.len() < wanted {
                    let Some(event) = self.ring.next() else {
                        emptied_ring = !self.ring.head_busy();
                        break;
                    };
                    batch.push(event);
                }
                self.waiting
                    .fetch_add(batch.len() - before, Ordering::SeqCst);
                if batch.is_empty() {
                    break !emptied_ring;
                }
                match self.sender.try_send(std::mem::take(&mut batch)) {
                    Ok(()) => {
                        // SAFETY: write(2) of one byte; a full pipe already wakes the reader.
                        unsafe { libc::write(self.signal.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
                    }
                    // All in flight: this one waits here for the next round.
                    Err(mpsc::TrySendError::Full(kept)) => {
                        batch = kept;
                        break true;
                    }
                    Err(mpsc::TrySendError::Disconnected(_)) => return Vec::new(),
                }
                if emptied_ring || room == 0 {
                    break !emptied_ring;
                }
            };
            if stopping {
                return batch;
            }
            if behind {
                std::thread::sleep(CATCH_UP);
            }
        }
    }

    /// A batch handed back, or a new one. Once a storm has passed, handed-back batches
    /// beyond the few kept for the next are freed here, on the thread that allocated them.
    fn empty_batch(&mut self) -> Vec<Event> {
        while let Ok(batch) = self.reusable.try_recv() {
            let calm = self.waiting.load(Ordering::SeqCst) < BATCH_EVENTS;
            if self.batches <= BATCHES_KEPT || !calm {
                return batch;
            }
            drop(batch);
            self.batches -= 1;
        }
        self.batches += 1;
        Vec::with_capacity(BATCH_EVENTS)
    }
}
