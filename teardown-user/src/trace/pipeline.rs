//! The run's data path: every event enters here once (recorded, then filtered), goes to the
//! raw printer or to the reconstruction, and each timeline that comes out is rendered once
//! for all the outputs that want it. One output's failure is reported with its path and
//! stops only that output: the others are still completed.

use std::{
    collections::HashSet,
    fs::File,
    io::{self, BufWriter, IsTerminal as _, Stdout, Write},
    path::{Path, PathBuf},
};

use teardown_common::{Event, KernelNames};

use crate::{
    clock::Clock,
    error::{Error, Result},
    filter::Filter,
    options::{Mode, Options, Source},
    output::{
        color, document, json, mermaid::MermaidFile, perfetto::PerfettoFile, text, DocumentWriter,
        ExchangePrinter, RawPrinter, Summary, TimelineSink,
    },
    pidns::PidNamespace,
    population::{metrics::Metrics, render::Health, sink::Sink, sink::Style, Grouping},
    reconstruct::{Reconstructor, Timeline, Tuple, MAX_OPEN, REORDER_WINDOW_NS},
    record::Recorder,
    snapshot::{Snapshot, TraceSnapshots},
};

/// How a run ended: what it saw, and every output that failed on the way.
pub struct Report {
    pub summary: Summary,
    pub failures: Vec<Error>,
}

pub struct Pipeline {
    mode: Mode,
    filter: Filter,
    recording: Option<Recording>,
    reconstructor: Reconstructor,
    outputs: Outputs,
}

/// `--record`: the file is opened before tracing (so a bad path fails early) but left
/// untouched until tracing has started.
struct Recording {
    path: PathBuf,
    state: RecordingState,
}

enum RecordingState {
    Opened(File),
    Writing(Recorder<BufWriter<File>>),
}

struct Outputs {
    mode: Mode,
    /// Said above the text header where pids are not the initial namespace's.
    pid_namespace: Option<PidNamespace>,
    stdout: BufWriter<Stdout>,
    /// Set when stdout's reader went away (`| head`): stop quietly.
    stdout_closed: bool,
    document: Option<DocumentWriter>,
    names: KernelNames,
    clock: Clock,
    raw: RawPrinter,
    /// `--exchange`: pairs both ends of local connections.
    exchange: Option<ExchangePrinter>,
    /// `--summary`, `--metrics` and the document's `population`.
    population: Option<Sink>,
    /// Timeline lines in colour.
    color: bool,
    /// Files that get every timeline: `--mermaid`, `--perfetto`.
    sinks: Vec<Box<dyn TimelineSink>>,
    summary: Summary,
    /// The text line being printed, and the timeline's JSON, rendered once for stdout and
    /// the document alike.
    line: Vec<u8>,
    json: Vec<u8>,
    /// The text line before it is copied into `line` (reused, like the others).
    text: String,
    failures: Vec<Error>,
}

impl Pipeline {
    /// Opens every output now, so that bad paths fail before any tracing starts.
    pub fn new(options: &Options, record: Option<&Path>, clock: Clock) -> Result<Pipeline> {
        let document = match &options.document {
            Some(path) => Some(DocumentWriter::create(
                path,
                &document::header(options, &clock),
            )?),
            None => None,
        };
        let recording = match record {
            // Not truncated yet: a previous recording survives a start that fails.
            Some(path) => Some(Recording {
                path: path.to_path_buf(),
                state: RecordingState::Opened(
                    File::options()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(path)
                        .map_err(|e| Error::output(path, e))?,
                ),
            }),
            None => None,
        };
        let mut sinks: Vec<Box<dyn TimelineSink>> = Vec::new();
        if let Some(path) = &options.mermaid {
            sinks.push(Box::new(MermaidFile::create(path)?));
        }
        if let Some(path) = &options.perfetto {
            sinks.push(Box::new(PerfettoFile::create(path)?));
        }
        let wants_population =
            options.summary.is_some() || options.metrics.is_some() || document.is_some();
        let population = wants_population.then(|| population(options)).transpose()?;
        let outputs = Outputs {
            mode: options.mode,
            pid_namespace: document::pid_namespace(&options.source),
            stdout: BufWriter::with_capacity(64 << 10, io::stdout()),
            stdout_closed: false,
            document,
            names: KernelNames::default(),
            clock,
            raw: RawPrinter::default(),
            exchange: options.exchange.then(ExchangePrinter::default),
            population,
            color: options.color,
            sinks,
            summary: Summary {
                shown: options.mode.raw().then_some(0),
                ..Summary::default()
            },
            line: Vec::new(),
            json: Vec::new(),
            text: String::new(),
            failures: Vec::new(),
        };
        let mut reconstructor = match &options.source {
            // As many open sockets as the kernel can hold owners for.
            Source::Live(live) => Reconstructor::with_limits(
                options.filter.clone(),
                REORDER_WINDOW_NS,
                live.max_sockets as usize,
            ),
            Source::Replay(_) => Reconstructor::new(options.filter.clone()),
        };
        if options.follow_time_wait {
            reconstructor.follow_time_wait();
        }
        Ok(Pipeline {
            mode: options.mode,
            filter: options.filter.clone(),
            recording,
            reconstructor,
            outputs,
        })
    }

    /// Events from now on are named with `names`; the recording (if any) starts here.
    pub fn start(&mut self, names: &KernelNames) {
        self.outputs.names = names.clone();
        if let Some(recording) = &mut self.recording {
            if let RecordingState::Opened(file) = &recording.state {
                let started = file
                    .try_clone()
                    .and_then(|file| {
                        file.set_len(0)?;
                        Recorder::new(BufWriter::new(file), names)
                    })
                    .map_err(|e| Error::output(&recording.path, e));
                match started {
                    Ok(recorder) => recording.state = RecordingState::Writing(recorder),
                    Err(e) => {
                        self.outputs.failures.push(e);
                        self.recording = None;
                    }
                }
            }
        }
        self.outputs.header();
    }

    pub fn event(&mut self, e: &Event) {
        self.outputs.summary.events += 1;
        if let Some(recording) = &mut self.recording {
            if let RecordingState::Writing(recorder) = &mut recording.state {
                if let Err(error) = recorder.event(e) {
                    self.outputs
                        .failures
                        .push(Error::output(&recording.path, error));
                    self.recording = None;
                }
            }
        }
        if self.mode.raw() {
            if self.filter.matches_raw_event(e) {
                self.outputs.event(e);
            }
        } else if self.filter.matches_event(e) {
            self.reconstructor.push(e);
        }
    }

    /// Applies what is old enough at `now_ns`, and writes out stdout and the recording
    /// (so that a recorder killed now leaves a recording that replays up to here).
    pub fn advance(&mut self, now_ns: u64) {
        let outputs = &mut self.outputs;
        self.reconstructor
            .advance(now_ns, &mut |t| outputs.timeline(t));
        outputs.flush();
        if let Some(recording) = &mut self.recording {
            if let RecordingState::Writing(recorder) = &mut recording.state {
                if let Err(error) = recorder.flush() {
                    self.outputs
                        .failures
                        .push(Error::output(&recording.path, error));
                    self.recording = None;
                }
            }
        }
    }

    /// Brings the population up to date at `now_ns`, and prints its summary when due.
    pub fn population(&mut self, now_ns: u64, lost_events: u64, lost_owners: u64, degraded: usize) {
        let health = Health {
            events: self.outputs.summary.events,
            lost_events,
            lost_owners,
            degraded,
            at_unix_ns: self.outputs.clock.unix_ns(now_ns),
        };
        let Some(population) = &mut self.outputs.population else {
            return;
        };
        if let Some(summary) = population.tick(now_ns, self.reconstructor.open_timelines(), health)
        {
            self.outputs.print_block(&summary);
            self.outputs.flush();
        }
    }

    /// The nested-run twin's repeats dropped so far (`Reconstructor::repeats`; none are
    /// recognised in raw mode, which prints every event).
    pub fn repeats(&self) -> u64 {
        self.reconstructor.repeats()
    }

    /// Sockets already open when tracing started, as the snapshot saw them.
    pub fn before_trace(&mut self, snapshot: &Snapshot) {
        self.reconstructor.before_trace(snapshot.before_trace());
    }

    /// Sockets still closing at the end are looked for in `snapshot`, taken just before
    /// the last events were read: one that is gone had its end lost.
    pub fn check_open_at_exit(&mut self, snapshot: &Snapshot) {
        let alive: HashSet<Tuple> = snapshot.full_sockets().collect();
        self.reconstructor
            .check_open_at_exit(Box::new(move |t: &Timeline| {
                alive.contains(&(t.netns, t.laddr, t.lport, t.raddr, t.rport))
            }));
    }

    /// The kernel lost events stamped in `(after_ns, until_ns]`.
    pub fn note_loss(&mut self, after_ns: u64, until_ns: u64) {
        self.reconstructor.note_loss(after_ns, until_ns);
    }

    /// Stdout's reader is gone: nobody is left to show anything to.
    pub fn stdout_closed(&self) -> bool {
        self.outputs.stdout_closed
    }

    /// Notes that stdout's reader went away (seen without writing to it).
    pub fn close_stdout(&mut self) {
        self.outputs.stdout_closed = true;
    }

    /// Flushes every output; the document and the recording get the final counters.
    /// Sockets still closing were followed until `end_ns`. `degraded`: what this kernel
    /// lacks; `source_problems`: what is wrong with the events' source.
    pub fn finish(
        self,
        end_ns: u64,
        lost_events: u64,
        lost_owners: u64,
        degraded: &[String],
        source_problems: &[String],
        snapshots: &TraceSnapshots,
    ) -> Report {
        let Pipeline {
            recording,
            mut reconstructor,
            mut outputs,
            ..
        } = self;
        reconstructor.advance(u64::MAX, &mut |t| outputs.timeline(t));
        // The sockets closing now are counted before they are handed out as incomplete.
        let health = Health {
            events: outputs.summary.events,
            lost_events,
            lost_owners,
            degraded: degraded.len(),
            at_unix_ns: outputs.clock.unix_ns(end_ns),
        };
        if let Some(population) = &mut outputs.population {
            population.refresh(end_ns, reconstructor.open_timelines(), health);
        }
        let stats = reconstructor.finish(end_ns, &mut |t| outputs.timeline(t));
        let (final_summary, population_json) = outputs
            .population
            .as_ref()
            .map(|p| (p.summary(), p.json()))
            .unzip();
        if let Some(summary) = final_summary.flatten() {
            outputs.print_block(&summary);
        }
        let summary = &mut outputs.summary;
        summary.lost_events = lost_events;
        summary.lost_owners = lost_owners;
        summary.evicted = stats.evicted;
        if let Some(Recording {
            path,
            state: RecordingState::Writing(recorder),
        }) = recording
        {
            if let Err(e) = recorder.finish(lost_events, lost_owners, end_ns) {
                outputs.failures.push(Error::output(&path, e));
            }
        }
        let summary = outputs.summary;
        if let Some(document) = outputs.document.take() {
            let mut trailer = document::trailer(&summary, degraded, source_problems);
            trailer.push(b',');
            trailer.extend_from_slice(snapshots.member().as_bytes());
            if let Some(population) = population_json {
                trailer.extend_from_slice(b",\"population\":");
                trailer.extend_from_slice(&population);
            }
            if let Err(e) = document.finish(&trailer) {
                outputs.failures.push(e);
            }
        }
        for sink in std::mem::take(&mut outputs.sinks) {
            if let Err(e) = sink.finish(&outputs.clock, &outputs.names) {
                outputs.failures.push(e);
            }
        }
        outputs.flush();
        Report {
            summary,
            failures: outputs.failures,
        }
    }
}

/// The population output; with `--metrics`, its endpoint is listening on return.
fn population(options: &Options) -> Result<Sink> {
    let style = if options.json_summary {
        Style::Json
    } else if io::stdout().is_terminal() {
        Style::Terminal
    } else {
        Style::Lines
    };
    let metrics = match options.metrics {
        Some(addr) => {
            let max_sockets = match &options.source {
                Source::Live(live) => live.max_sockets,
                Source::Replay(_) => MAX_OPEN as u32,
            };
            let metrics = Metrics::new(max_sockets);
            let server = metrics
                .serve(addr)
                .map_err(|error| Error::Metrics { addr, error })?;
            tokio::spawn(server);
            Some(metrics)
        }
        None => None,
    };
    Ok(Sink::new(
        Grouping::new(options.counted_ports.clone()),
        options.summary.map(|every| (every, style)),
        metrics,
    ))
}

impl Outputs {
    /// The column header of the text modes.
    fn header(&mut self) {
        let header = match self.mode {
            Mode::Text => text::TIMELINE_HEADER,
            Mode::RawText => text::RAW_HEADER,
            Mode::Ndjson | Mode::RawJson | Mode::Summary => return,
        };
        if let Some(line) = self.pid_namespace.and_then(PidNamespace::text_line) {
            self.line.clear();
            json::push(&mut self.line, &line);
            self.print_line();
        }
        self.line.clear();
        json::push(&mut self.line, header);
        self.print_line();
    }

    fn print_line(&mut self) {
        self.line.push(b'\n');
        if !self.stdout_closed {
            if let Err(e) = self.stdout.write_all(&self.line) {
                self.stdout_failed(e);
            }
        }
    }

    fn stdout_failed(&mut self, e: io::Error) {
        self.stdout_closed = true;
        if e.kind() != io::ErrorKind::BrokenPipe {
            self.failures
                .push(Error::output(Path::new("standard output"), e));
        }
    }

    fn timeline(&mut self, t: Timeline) {
        self.summary.count(&t);
        if let Some(population) = &mut self.population {
            population.timeline(&t, &self.names);
        }
        let mut failed = None;
        for (i, sink) in self.sinks.iter_mut().enumerate() {
            if let Err(e) = sink.timeline(&t, &self.clock, &self.names) {
                self.failures.push(e);
                failed = Some(i);
            }
        }
        if let Some(i) = failed {
            self.sinks.remove(i);
        }
        let ndjson = self.mode == Mode::Ndjson;
        if ndjson || self.document.is_some() {
            self.json.clear();
            json::timeline(&mut self.json, &t, &self.names);
        }
        if let Some(document) = &mut self.document {
            if let Err(e) = document.timeline(&self.json) {
                self.failures.push(e);
                self.document = None;
            }
        }
        self.line.clear();
        match self.mode {
            Mode::Ndjson => self.line.extend_from_slice(&self.json),
            Mode::Text => {
                self.text.clear();
                text::write_timeline(&mut self.text, &t, &self.clock, &self.names);
                if self.color {
                    self.text = color::timeline(std::mem::take(&mut self.text), &t);
                }
                json::push(&mut self.line, &self.text)
            }
            Mode::RawText | Mode::RawJson | Mode::Summary => return,
        }
        self.print_line();
        let exchange = self
            .exchange
            .as_mut()
            .and_then(|x| x.timeline(&t, &self.clock, &self.names));
        if let Some(block) = exchange {
            self.line.clear();
            json::push(&mut self.line, &block);
            self.print_line();
        }
    }

    fn event(&mut self, e: &Event) {
        if let Some(shown) = &mut self.summary.shown {
            *shown += 1;
        }
        self.line.clear();
        match self.mode {
            Mode::RawJson => json::raw_event(&mut self.line, e, &self.names),
            Mode::RawText => {
                let line = self.raw.line(e, &self.clock, &self.names);
                json::push(&mut self.line, &line);
            }
            Mode::Text | Mode::Ndjson | Mode::Summary => return,
        }
        self.print_line();
    }

    /// Prints `text` as it is (it ends its own lines).
    fn print_block(&mut self, text: &str) {
        self.line.clear();
        json::push(&mut self.line, text.strip_suffix('\n').unwrap_or(text));
        self.print_line();
    }

    fn flush(&mut self) {
        if !self.stdout_closed {
            if let Err(e) = self.stdout.flush() {
                self.stdout_failed(e);
            }
        }
    }
}
