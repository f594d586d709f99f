//! `-o FILE`: one JSON document, `{..., "timelines": [...], "lost_events": N, ...}`.
//!
//! Timelines are streamed out as they complete, so memory does not grow with the number of
//! connections. Nothing is destroyed on the way (see `SafeFile`).

use std::path::Path;

use super::{
    json::{num, or_null, push, separated, string},
    safe_file::SafeFile,
    Summary,
};
use crate::{
    clock::{unix_ns, Clock},
    error::Result,
    options::{Options, Source},
    pidns::PidNamespace,
    reconstruct::Role,
};

pub struct DocumentWriter {
    file: SafeFile,
    count: u64,
}

impl DocumentWriter {
    /// Opens the output now, so an unwritable path fails before tracing starts.
    /// `header` is the document's leading members, without braces.
    pub fn create(path: &Path, header: &[u8]) -> Result<Self> {
        let mut file = SafeFile::create(path)?;
        file.write_all(b"{")?;
        file.write_all(header)?;
        file.write_all(b",\"timelines\":[")?;
        Ok(DocumentWriter { file, count: 0 })
    }

    /// Appends one timeline, already rendered as JSON.
    pub fn timeline(&mut self, json: &[u8]) -> Result<()> {
        let separator: &[u8] = if self.count > 0 { b",\n" } else { b"\n" };
        self.count += 1;
        self.file.write_all(separator)?;
        self.file.write_all(json)
    }

    /// Closes the document with `trailer` (members after the timelines) and, for a regular
    /// file, moves it into place.
    pub fn finish(mut self, trailer: &[u8]) -> Result<()> {
        self.file.write_all(b"\n],")?;
        self.file.write_all(trailer)?;
        self.file.write_all(b"}\n")?;
        self.file.finish()
    }
}

/// The pid namespace a trace's pids are in: the tracer's own when live.
pub fn pid_namespace(source: &Source) -> Option<PidNamespace> {
    match source {
        Source::Live(_) => PidNamespace::own().ok(),
        Source::Replay(_) => None,
    }
}

/// The document's leading members: what was traced, with which filters, and the clock.
pub fn header(options: &Options, clock: &Clock) -> Vec<u8> {
    let mut out = Vec::new();
    push(&mut out, "\"version\":");
    string(&mut out, env!("CARGO_PKG_VERSION").as_bytes());
    push(&mut out, ",\"format\":1,\"source\":");
    match &options.source {
        Source::Replay(path) => string(&mut out, path.as_os_str().as_encoded_bytes()),
        Source::Live(_) => push(&mut out, "\"live\""),
    }
    push(&mut out, ",\"started_unix_ns\":");
    push(&mut out, &unix_ns().to_string());
    push(
        &mut out,
        ",\"clock\":\"CLOCK_MONOTONIC\",\"monotonic_to_unix_ns\":",
    );
    push(&mut out, &clock.realtime_offset_ns.to_string());
    // The namespace whose numbers the pids are: unknown for a replay.
    push(&mut out, ",\"pid_namespace\":");
    or_null(&mut out, pid_namespace(&options.source), |out, ns| {
        push(out, "{\"inode\":");
        num(out, ns.inode);
        push(out, ",\"initial\":");
        push(out, if ns.is_initial() { "true" } else { "false" });
        out.push(b'}');
    });
    let f = &options.filter;
    push(&mut out, ",\"filters\":{\"pids\":[");
    separated(&mut out, &f.pids, |out, &pid| num(out, pid.into()));
    for (name, ports) in [
        ("ports", &f.ports),
        ("lports", &f.lports),
        ("rports", &f.rports),
    ] {
        push(&mut out, "],\"");
        push(&mut out, name);
        push(&mut out, "\":[");
        separated(&mut out, ports, |out, &port| num(out, port.into()));
    }
    push(&mut out, "],\"family\":");
    or_null(&mut out, f.family, |out, family| {
        string(out, family.name().as_bytes())
    });
    out.push(b'}');
    out
}

/// The members after the timelines: what was lost, the counts, what this kernel lacks.
pub fn trailer(summary: &Summary, degraded: &[String], source_problems: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    push(&mut out, "\"ended_unix_ns\":");
    push(&mut out, &unix_ns().to_string());
    for (name, value) in [
        ("lost_events", summary.lost_events),
        ("lost_owners", summary.lost_owners),
        ("evicted", summary.evicted),
    ] {
        push(&mut out, ",\"");
        push(&mut out, name);
        push(&mut out, "\":");
        num(&mut out, value);
    }
    push(&mut out, ",\"summary\":{");
    for (role, n) in Role::ALL.iter().zip(summary.by_role) {
        push(&mut out, "\"");
        push(&mut out, role.name());
        push(&mut out, "\":");
        num(&mut out, n);
        out.push(b',');
    }
    push(&mut out, "\"unknown\":");
    num(&mut out, summary.unknown_role);
    push(&mut out, ",\"incomplete\":");
    num(&mut out, summary.still_closing());
    push(&mut out, ",\"gap\":");
    num(&mut out, summary.damaged);
    push(&mut out, "},\"degraded\":[");
    separated(&mut out, degraded, |out, d| string(out, d.as_bytes()));
    push(&mut out, "],\"source_problems\":[");
    separated(&mut out, source_problems, |out, p| {
        string(out, p.as_bytes())
    });
    out.push(b']');
    out
}
