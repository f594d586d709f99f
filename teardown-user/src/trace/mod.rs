//! One run of `teardown-trace`, wiring only: a source of events (the kernel, or a recording)
//! feeds the [`Pipeline`]. Stops on a stop signal, the end of `--duration` or of the
//! recording, or when stdout's reader is gone, and always finishes its outputs cleanly.

mod pipeline;
mod priority;

use std::{fs::File, io::BufReader, path::Path, time::Duration};

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    time::{interval, sleep, MissedTickBehavior},
};

pub use pipeline::{Pipeline, Report};
use priority::Priority;

use crate::{
    capture::{Capture, CaptureOptions, Drain, Lost},
    clock::{monotonic_ns, Clock},
    error::{Error, Result},
    limits::{
        ensure_address_space, ensure_descriptors, LIVE_ADDRESS_SPACE, LIVE_DESCRIPTORS,
        REPLAY_DESCRIPTORS,
    },
    options::{Live, Options, Source},
    record::Replay,
    signals::StopSignals,
    snapshot::{leaks, TraceSnapshots},
};

/// How often user space looks at the ring buffer when the kernel has not woken it: bounds
/// the delay before a teardown is shown, at no per-event cost.
const POLL_INTERVAL: Duration = Duration::from_millis(40);

pub fn run(options: &Options, signals: StopSignals) -> Result<Report> {
    ensure_descriptors(match options.source {
        Source::Live(_) => LIVE_DESCRIPTORS,
        Source::Replay(_) => REPLAY_DESCRIPTORS,
    })?;
    if let Source::Live(live) = &options.source {
        // The ring's data pages are mapped twice, back to back.
        ensure_address_space(LIVE_ADDRESS_SPACE + 2 * u64::from(live.ring_bytes))?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match &options.source {
            Source::Replay(path) => replay(options, path, signals).await,
            Source::Live(live_options) => live(options, live_options, signals).await,
        }
    })
}

/// True when stdout is a pipe or socket whose reader has gone (`| head` exited): noticed
/// without writing to it, so a quiet trace stops too.
fn stdout_gone() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: poll(2) on one pollfd we own, without waiting.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

async fn live(options: &Options, live: &Live, signals: StopSignals) -> Result<Report> {
    let mut pipeline = Pipeline::new(options, live.record.as_deref(), Clock::now())?;
    let mut capture = Capture::start(&CaptureOptions {
        filter: options.filter.clone(),
        closing_only: !options.mode.raw(),
        ring_bytes: live.ring_bytes,
        max_sockets: live.max_sockets,
        floor: live.floor,
    })?;
    // Taken once the programs are attached, so that no socket falls between the two:
    // sockets already open get their owner in the kernel and say so in their timelines.
    let mut snapshots = TraceSnapshots::new(options.document.is_some());
    let start = snapshots.take("start");
    if let Some(line) = start.unseen.line() {
        eprintln!("teardown-trace: snapshot: {line}");
    }
    if let Err(e) = capture.seed(&start) {
        capture.degraded.push(format!(
            "{e}: sockets open before tracing get their owner only when they close"
        ));
    }
    pipeline.before_trace(&start);
    drop(start);
    let drain = capture.start_drain(MAX_WAITING_EVENTS)?;
    let mut degraded = capture.degraded.clone();
    if let Some(e) = &drain.not_real_time {
        degraded.push(format!(
            "cannot run the drain at real-time priority ({e}): on a busy host events may be lost"
        ));
    }
    // One line for everything this kernel and this host take away (the document lists each).
    if !degraded.is_empty() {
        eprintln!("teardown-trace: warning: degraded: {}", degraded.join("; "));
    }
    // Like tcpstates, a pid that is not there now is kept (it may come), but not in silence.
    for pid in &options.filter.pids {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!(
                "teardown-trace: warning: no process {pid} now: -p {pid} shows only sockets of a process that gets that pid"
            );
        }
    }
    pipeline.start(&capture.names);
    // SAFETY: the wake-up pipes belong to `drain` and `signals`, which the AsyncFds own.
    let drain = unsafe { AsyncFd::register(drain) }
        .map_err(|e| Error::Bpf(format!("watching the drain: {e}")))?;
    let stop = unsafe { AsyncFd::register(signals) }
        .map_err(|e| Error::Bpf(format!("watching for signals: {e}")))?;
    let mut snapshot_signal = signal(SignalKind::user_defined1())?;
    let deadline = sleep(live.duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let mut tick = interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let mut priority = Priority::yielding();
    eprintln!("Tracing TCP teardowns. Hit Ctrl-C to end.");
    let mut losses = Losses {
        reported: Lost::default(),
        checked_ns: monotonic_ns(),
    };
    loop {
        let mut snapshot_asked = false;
        let stopping = stop.get_ref().caught().is_some()
            || tokio::select! {
                _ = tick.tick() => false,
                _ = snapshot_signal.recv() => {
                    snapshot_asked = true;
                    false
                }
                ready = drain.readable() => {
                    if let Ok(mut guard) = ready {
                        guard.get_inner().clear_wake();
                        guard.clear_ready();
                    }
                    false
                }
                _ = stop.readable() => true,
                _ = &mut deadline => true,
            };
        capture.flush_log();
        drain.get_ref().receive(|e| pipeline.event(e));
        losses.check(&capture, drain.get_ref(), &mut pipeline);
        pipeline.population(
            monotonic_ns(),
            losses.reported.events(),
            losses.reported.owners,
            degraded.len(),
        );
        if priority.after_drain(drain.get_ref().waiting()) {
            priority.apply();
        }
        if snapshot_asked {
            // On demand (SIGUSR1): the leaks view on stderr, the snapshot into the document.
            let now = snapshots.take("signal");
            eprint!("{}", leaks::text(&now, &leaks::Leaks::of(&now)));
        }
        if stdout_gone() {
            pipeline.close_stdout();
        }
        if stopping || pipeline.stdout_closed() {
            break;
        }
    }
    // Before the last events are read: a socket gone by now had its CLOSE read, or lost.
    let exit = snapshots.take("exit");
    pipeline.check_open_at_exit(&exit);
    drop(exit);
    let mut drain = drain.into_inner();
    drain.stop();
    drain.receive(|e| pipeline.event(e));
    losses.check(&capture, &drain, &mut pipeline);
    let lost = losses.reported;
    Ok(pipeline.finish(
        monotonic_ns(),
        lost.events(),
        lost.owners,
        &degraded,
        &[],
        &snapshots,
    ))
}

/// Events moved out of the ring that may wait to be handled (112 bytes each): room for a
/// storm of 100,000 closes several times over. Beyond it, the ring fills and what does not
/// fit is counted lost.
const MAX_WAITING_EVENTS: usize = 1 << 21;

/// Losses as last reported, and when the kernel's counts were last read.
struct Losses {
    reported: Lost,
    checked_ns: u64,
}

impl Losses {
    /// Reads the kernel's counts; new losses are noted before the timelines they may touch
    /// are handed out (by the `advance` that follows), and said with their cause.
    fn check(&mut self, capture: &Capture, drain: &Drain, pipeline: &mut Pipeline) {
        let now = monotonic_ns();
        let lost = capture.lost(pipeline.repeats()).at_least(&self.reported);
        if lost.events() > self.reported.events() {
            pipeline.note_loss(self.checked_ns, now);
        }
        self.checked_ns = now;
        pipeline.advance(now);
        warn_lost(&self.reported, &lost, drain.full());
        self.reported = lost;
    }
}

/// Says, as it happens, what was lost since the last report and why. `backlog_full`:
/// the drain had stopped taking events because too many waited.
fn warn_lost(before: &Lost, now: &Lost, backlog_full: bool) {
    if now.ring_full > before.ring_full {
        let why = if backlog_full {
            "events waited in user space faster than they could be handled"
        } else {
            "the ring buffer filled faster than the drain emptied it; raise --ring-mb"
        };
        eprintln!(
            "teardown-trace: WARNING: {} events lost ({why})",
            now.ring_full - before.ring_full
        );
    }
    if now.skipped > before.skipped {
        eprintln!(
            "teardown-trace: WARNING: {} events lost (the kernel skipped a hook that fired \
             while the program was already running on that CPU; so far mostly {})",
            now.skipped - before.skipped,
            now.most_skipped.unwrap_or("?")
        );
    }
}

async fn replay(options: &Options, path: &Path, signals: StopSignals) -> Result<Report> {
    let corrupt = |offset, reason| Error::Recording {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let file = File::open(path).map_err(|error| Error::Input {
        path: path.to_path_buf(),
        error,
    })?;
    let mut recording =
        Replay::open(BufReader::new(file)).map_err(|e| corrupt(e.offset, e.reason))?;
    let mut pipeline = Pipeline::new(options, None, Clock::now())?;
    pipeline.start(&recording.names);

    let mut newest = 0;
    let mut count = 0u64;
    while let Some(event) = recording
        .next_event()
        .map_err(|e| corrupt(e.offset, e.reason))?
    {
        newest = newest.max(event.ts_ns);
        pipeline.event(&event);
        count += 1;
        if count.is_multiple_of(4096) {
            pipeline.advance(newest);
            pipeline.population(newest, 0, 0, 0);
            if signals.caught().is_some() || pipeline.stdout_closed() {
                break;
            }
        }
    }
    let (lost_events, lost_owners) = recording.counts.unwrap_or((0, 0));
    // Stopped early, cut short, or a version 1 file: the newest event is as far as it goes.
    let end_ns = recording.end_ns.unwrap_or(newest).max(newest);
    let problems: Vec<String> = recording.ending.problem().into_iter().collect();
    for problem in &problems {
        eprintln!("teardown-trace: warning: {}: {problem}", path.display());
    }
    let report = pipeline.finish(
        end_ns,
        lost_events,
        lost_owners,
        &[],
        &problems,
        &TraceSnapshots::new(false),
    );
    if let Some(addr) = options.metrics {
        // The replayed totals stay up for a Prometheus to scrape.
        eprintln!("Replayed. Serving metrics on http://{addr}/metrics until Ctrl-C.");
        // SAFETY: the pipe belongs to `signals`, which the AsyncFd owns.
        let stop = unsafe { AsyncFd::register(signals) }
            .map_err(|e| Error::Bpf(format!("watching for signals: {e}")))?;
        while stop.get_ref().caught().is_none() {
            if let Ok(mut guard) = stop.readable().await {
                guard.clear_ready();
            }
        }
    }
    Ok(report)
}
