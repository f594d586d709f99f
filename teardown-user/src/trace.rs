//! One run of `teardown-trace`: a source of events (the kernel, or a recording) feeds the
//! reconstruction, whose timelines go to the chosen outputs. Stops on SIGINT, SIGTERM, the
//! end of `--duration` or of the recording, and always finishes its outputs cleanly.

use std::{
    fs::File,
    io::{self, BufReader, BufWriter, Stdout, Write},
    path::Path,
    time::Duration,
};

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    time::{interval, sleep, MissedTickBehavior},
};

use crate::{
    capture::{Capture, CaptureOptions, Lost},
    cli::Cli,
    error::{Error, Result},
    event::Event,
    output::{
        color, json, mermaid::MermaidFile, perfetto::PerfettoFile, text, Clock, DocumentWriter,
        ExchangePrinter, KernelNames, RawPrinter, Summary, TimelineSink,
    },
    reconstruct::{Reconstructor, Timeline},
    record::{Recorder, Replay},
};

/// How often user space looks at the ring buffer when the kernel has not woken it: bounds
/// the delay before a teardown is shown, at no per-event cost.
const POLL_INTERVAL: Duration = Duration::from_millis(40);

/// The consumer yields to the traced workload: at nice 10 it runs mostly when a CPU has
/// time to spare, instead of preempting the processes whose connections it is tracing
/// (`cargo xtask bench --concurrency 1`: 0.89 -> 0.92 of the untraced rate).
const YIELDING_NICE: i32 = 10;

/// The consumer's CPU priority. It drops to `YIELDING_NICE` and goes back to a normal
/// share for good once it falls behind: a drain that finds the ring half full, or any lost
/// event, means the host is busy enough that yielding would cost events.
struct Priority {
    nice: i32,
    ring_bytes: usize,
}

impl Priority {
    fn yielding(ring_bytes: usize) -> Self {
        let priority = Priority {
            nice: YIELDING_NICE,
            ring_bytes,
        };
        priority.apply();
        priority
    }

    /// After a drain of `events` events; `lost` says whether events were lost since.
    /// True when the priority changed and must be applied.
    fn after_drain(&mut self, events: usize, lost: bool) -> bool {
        let behind = lost || events * size_of::<Event>() >= self.ring_bytes / 2;
        let changed = behind && self.nice != 0;
        if changed {
            self.nice = 0;
        }
        changed
    }

    fn apply(&self) {
        // SAFETY: plain syscall on this process. Best effort: only root, which tracing
        // needs anyway, may raise its priority again.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, self.nice) };
    }
}

pub fn run(cli: &Cli) -> Result<Summary> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match &cli.replay {
            Some(path) => replay(cli, path).await,
            None => live(cli).await,
        }
    })
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns()`.
fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Text,
    Ndjson,
    RawText,
    RawJson,
}

/// Where events and timelines go. Write errors are kept (the first one) and reported at
/// the end of the tick, so the reconstruction callbacks stay simple.
struct Outputs {
    mode: Mode,
    stdout: BufWriter<Stdout>,
    /// Set when stdout's reader went away (`| head`): stop quietly.
    stdout_closed: bool,
    doc: Option<DocumentWriter>,
    names: KernelNames,
    clock: Clock,
    raw: RawPrinter,
    /// `--exchange`: pairs both ends of local connections.
    exchange: Option<ExchangePrinter>,
    /// `--color`: timeline lines in colour.
    color: bool,
    /// Files that get every timeline: `--mermaid`, `--perfetto`.
    sinks: Vec<Box<dyn TimelineSink>>,
    summary: Summary,
    line: Vec<u8>,
    error: Option<Error>,
}

impl Outputs {
    fn print(&mut self) {
        if self.stdout_closed {
            return;
        }
        self.line.push(b'\n');
        if let Err(e) = self.stdout.write_all(&self.line) {
            self.stdout_failed(e);
        }
    }

    fn stdout_failed(&mut self, e: io::Error) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            self.stdout_closed = true;
        } else {
            self.error.get_or_insert(Error::Io(e));
        }
    }

    fn timeline(&mut self, t: Timeline) {
        self.summary.count(&t);
        if let Some(doc) = &mut self.doc {
            if let Err(e) = doc.timeline(&t, &self.names) {
                self.error.get_or_insert(e);
            }
        }
        for sink in &mut self.sinks {
            if let Err(e) = sink.timeline(&t, &self.clock, &self.names) {
                self.error.get_or_insert(e);
            }
        }
        self.line.clear();
        match self.mode {
            Mode::Ndjson => json::timeline(&mut self.line, &t, &self.names),
            Mode::Text => {
                let line = text::timeline(&t, &self.clock, &self.names);
                let line = if self.color {
                    color::timeline(line, &t)
                } else {
                    line
                };
                json::push(&mut self.line, &line)
            }
            Mode::RawText | Mode::RawJson => return,
        }
        self.print();
        let exchange = self
            .exchange
            .as_mut()
            .and_then(|x| x.timeline(&t, &self.clock, &self.names));
        if let Some(block) = exchange {
            self.line.clear();
            json::push(&mut self.line, &block);
            self.print();
        }
    }

    fn event(&mut self, e: &Event) {
        self.line.clear();
        match self.mode {
            Mode::RawJson => json::raw_event(&mut self.line, e, &self.names),
            Mode::RawText => {
                let line = self.raw.line(e, &self.clock, &self.names);
                json::push(&mut self.line, &line);
            }
            Mode::Text | Mode::Ndjson => return,
        }
        self.print();
    }

    fn flush(&mut self) -> Result<()> {
        if !self.stdout_closed {
            if let Err(e) = self.stdout.flush() {
                self.stdout_failed(e);
            }
        }
        self.error.take().map_or(Ok(()), Err)
    }
}

struct Pipeline {
    events: u64,
    /// For `--raw`, whose events skip the reconstruction and its filter.
    filter: crate::filter::Filter,
    recorder: Option<Recorder<BufWriter<File>>>,
    reconstructor: Reconstructor,
    outputs: Outputs,
}

impl Pipeline {
    fn event(&mut self, e: &Event) {
        self.events += 1;
        if let Some(recorder) = &mut self.recorder {
            if let Err(e) = recorder.event(e) {
                self.outputs.error.get_or_insert(Error::Io(e));
            }
        }
        if let Some(shown) = &mut self.outputs.summary.raw_shown {
            if self.filter.matches_event(e) {
                *shown += 1;
                self.outputs.event(e);
            }
        } else {
            self.reconstructor.push(e);
        }
    }

    fn advance(&mut self, now_ns: u64) -> Result<()> {
        let outputs = &mut self.outputs;
        self.reconstructor
            .advance(now_ns, &mut |t| outputs.timeline(t));
        outputs.flush()
    }

    /// Flushes every output; the document and the recording get the final counters.
    /// Sockets still closing were followed until `end_ns`.
    fn finish(
        self,
        end_ns: u64,
        lost_events: u64,
        lost_owners: u64,
        degraded: &[String],
    ) -> Result<Summary> {
        let Pipeline {
            events,
            recorder,
            reconstructor,
            mut outputs,
            ..
        } = self;
        let stats = reconstructor.finish(end_ns, &mut |t| outputs.timeline(t));
        outputs.summary.lost_events = lost_events;
        outputs.summary.lost_owners = lost_owners;
        outputs.summary.evicted = stats.evicted;
        outputs.summary.events = events;
        if let Some(recorder) = recorder {
            recorder.finish(lost_events, lost_owners, end_ns)?;
        }
        let summary = outputs.summary;
        if let Some(doc) = outputs.doc.take() {
            doc.finish(&trailer(&summary, degraded))?;
        }
        for sink in std::mem::take(&mut outputs.sinks) {
            sink.finish(&outputs.clock, &outputs.names)?;
        }
        outputs.flush()?;
        Ok(summary)
    }
}

fn document_header(cli: &Cli, clock: &Clock) -> String {
    let mut out = format!(
        "\"version\":\"{}\",\"format\":1,\"source\":",
        env!("CARGO_PKG_VERSION")
    );
    match &cli.replay {
        Some(path) => out.push_str(&json_string(path.to_string_lossy().as_bytes())),
        None => out.push_str("\"live\""),
    }
    let f = cli.filter();
    let list = |v: &[u16]| v.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    let pids = f
        .pids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let family = match f.family {
        Some(crate::filter::Family::Ipv4) => "\"ipv4\"",
        Some(crate::filter::Family::Ipv6) => "\"ipv6\"",
        None => "null",
    };
    out.push_str(&format!(
        ",\"started_unix_ns\":{},\"clock\":\"CLOCK_MONOTONIC\",\"monotonic_to_unix_ns\":{},\
         \"filters\":{{\"pids\":[{pids}],\"ports\":[{}],\"lports\":[{}],\"rports\":[{}],\"family\":{family}}}",
        clock_ns(libc::CLOCK_REALTIME),
        clock.realtime_offset_ns,
        list(&f.ports),
        list(&f.lports),
        list(&f.rports),
    ));
    out
}

fn json_string(bytes: &[u8]) -> String {
    let mut out = Vec::new();
    json::string(&mut out, bytes);
    String::from_utf8_lossy(&out).into_owned()
}

fn trailer(summary: &Summary, degraded: &[String]) -> String {
    let mut out = format!(
        "\"ended_unix_ns\":{},\"lost_events\":{},\"lost_owners\":{},\"evicted\":{},\"summary\":{{",
        clock_ns(libc::CLOCK_REALTIME),
        summary.lost_events,
        summary.lost_owners,
        summary.evicted
    );
    for (role, n) in crate::reconstruct::Role::ALL.iter().zip(summary.by_role) {
        out.push_str(&format!("\"{}\":{n},", role.name()));
    }
    out.push_str(&format!(
        "\"unknown\":{},\"incomplete\":{}}},\"degraded\":[",
        summary.unknown_role, summary.incomplete
    ));
    for (i, d) in degraded.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json_string(d.as_bytes()));
    }
    out.push(']');
    out
}

/// Everything that can fail on bad paths is checked here, before any tracing starts.
fn pipeline(cli: &Cli) -> Result<(Pipeline, Option<File>)> {
    let clock = Clock {
        realtime_offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC),
    };
    let doc = match &cli.output {
        Some(path) => Some(DocumentWriter::create(path, &document_header(cli, &clock))?),
        None => None,
    };
    let mut sinks: Vec<Box<dyn TimelineSink>> = Vec::new();
    if let Some(path) = &cli.mermaid {
        sinks.push(Box::new(MermaidFile::create(path)?));
    }
    if let Some(path) = &cli.perfetto {
        sinks.push(Box::new(PerfettoFile::create(path)?));
    }
    let record_file = match &cli.record {
        Some(path) => Some(File::create(path).map_err(|source| Error::Output {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let mode = match (cli.raw, cli.json) {
        (false, false) => Mode::Text,
        (false, true) => Mode::Ndjson,
        (true, false) => Mode::RawText,
        (true, true) => Mode::RawJson,
    };
    let outputs = Outputs {
        mode,
        stdout: BufWriter::with_capacity(64 << 10, io::stdout()),
        stdout_closed: false,
        doc,
        names: KernelNames::default(),
        clock,
        raw: RawPrinter::default(),
        exchange: cli.exchange.then(ExchangePrinter::default),
        color: cli.color.enabled(),
        sinks,
        summary: Summary {
            raw_shown: cli.raw.then_some(0),
            ..Summary::default()
        },
        line: Vec::new(),
        error: None,
    };
    let pipeline = Pipeline {
        events: 0,
        filter: cli.filter(),
        recorder: None,
        reconstructor: Reconstructor::new(cli.filter()),
        outputs,
    };
    Ok((pipeline, record_file))
}

fn header(pipeline: &mut Pipeline) {
    pipeline.outputs.line.clear();
    match pipeline.outputs.mode {
        Mode::Text => json::push(&mut pipeline.outputs.line, text::TIMELINE_HEADER),
        Mode::RawText => json::push(&mut pipeline.outputs.line, text::RAW_HEADER),
        Mode::Ndjson | Mode::RawJson => return,
    }
    pipeline.outputs.print();
}

async fn live(cli: &Cli) -> Result<Summary> {
    let (mut pipeline, record_file) = pipeline(cli)?;
    let options = CaptureOptions {
        filter: cli.filter(),
        closing_only: !cli.raw,
        ring_bytes: cli.ring_mb << 20,
        max_sockets: cli.max_sockets,
    };
    let capture = Capture::start(&options)?;
    for warning in &capture.degraded {
        eprintln!("teardown-trace: warning: {warning}");
    }
    pipeline.outputs.names = capture.names.clone();
    if let Some(file) = record_file {
        pipeline.recorder = Some(Recorder::new(BufWriter::new(file), &capture.names)?);
    }
    let degraded = capture.degraded.clone();
    // SAFETY: the ring buffer's fd belongs to `capture`, which the AsyncFd owns, so the fd
    // stays open for as long as it is registered.
    let mut ring = unsafe { AsyncFd::register(capture) }
        .map_err(|e| Error::Bpf(format!("watching the ring buffer: {e}")))?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let deadline = sleep(Duration::from_secs(cli.duration.unwrap_or(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut tick = interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let mut priority = Priority::yielding(options.ring_bytes as usize);
    eprintln!("Tracing TCP teardowns. Hit Ctrl-C to end.");
    header(&mut pipeline);
    let mut reported = Lost::default();
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            ready = ring.readable_mut() => {
                if let Ok(mut guard) = ready {
                    guard.clear_ready();
                }
                false
            }
            _ = interrupt.recv() => true,
            _ = terminate.recv() => true,
            _ = &mut deadline => true,
        };
        let capture = ring.get_mut();
        let drained = capture.drain(|e| pipeline.event(e));
        pipeline.advance(monotonic_ns())?;
        let lost = capture.lost();
        let ring_was_full = lost.ring_full > reported.ring_full;
        if priority.after_drain(drained, ring_was_full) {
            priority.apply();
        }
        if ring_was_full {
            eprintln!(
                "teardown-trace: WARNING: {} events lost (ring buffer full; try --ring-mb)",
                lost.ring_full - reported.ring_full
            );
        }
        if lost.skipped > reported.skipped {
            eprintln!(
                "teardown-trace: WARNING: {} events lost (the kernel skipped a hook that fired \
                 while the program was already running on that CPU)",
                lost.skipped - reported.skipped
            );
        }
        reported = lost;
        if stop || pipeline.outputs.stdout_closed {
            break;
        }
    }
    let capture = ring.into_inner();
    let lost = capture.lost();
    let summary = pipeline.finish(monotonic_ns(), lost.events(), lost.owners, &degraded)?;
    drop(capture);
    Ok(summary)
}

async fn replay(cli: &Cli, path: &Path) -> Result<Summary> {
    let corrupt = |offset, reason| Error::Recording {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let file = File::open(path).map_err(|e| corrupt(0, e.to_string()))?;
    let mut recording =
        Replay::open(BufReader::new(file)).map_err(|e| corrupt(e.offset, e.reason))?;
    let (mut pipeline, _) = pipeline(cli)?;
    pipeline.outputs.names = recording.names.clone();
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    header(&mut pipeline);

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
            pipeline.advance(newest)?;
            let stop = tokio::select! {
                biased;
                _ = interrupt.recv() => true,
                _ = terminate.recv() => true,
                _ = std::future::ready(()) => false,
            };
            if stop || pipeline.outputs.stdout_closed {
                break;
            }
        }
    }
    let (lost_events, lost_owners) = recording.counts.unwrap_or((0, 0));
    // Stopped early, or a version 1 file: the newest event is as far as it goes.
    let end_ns = recording.end_ns.unwrap_or(newest).max(newest);
    pipeline.finish(end_ns, lost_events, lost_owners, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_after(drains: &[(usize, bool)]) -> i32 {
        let mut priority = Priority {
            nice: YIELDING_NICE,
            ring_bytes: 4 << 20,
        };
        for &(events, lost) in drains {
            priority.after_drain(events, lost);
        }
        priority.nice
    }

    #[test]
    fn the_consumer_yields_until_it_falls_behind_then_keeps_a_normal_share() {
        let half_ring = (2usize << 20).div_ceil(size_of::<Event>());
        assert_eq!(nice_after(&[(0, false), (1000, false)]), YIELDING_NICE);
        assert_eq!(nice_after(&[(half_ring - 1, false)]), YIELDING_NICE);
        assert_eq!(nice_after(&[(half_ring, false), (0, false)]), 0);
        assert_eq!(nice_after(&[(10, true), (0, false)]), 0, "a lost event");
    }
}
