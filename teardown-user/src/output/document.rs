//! `-o FILE`: one JSON document, `{..., "timelines": [...], "lost_events": N, ...}`.
//!
//! Timelines are streamed out as they complete, so memory does not grow with the number of
//! connections. Nothing is destroyed on the way:
//! - a regular file (or a symlink to one) is written beside its real location and renamed
//!   over it by `finish`, so it only ever holds a complete document, and the link stays;
//! - anything else that exists (a device such as /dev/null, a FIFO, `/dev/stdout`, a pipe
//!   given as `>(cmd)`) is written into directly.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use super::{
    json::{num, or_null, push, separated, string},
    Summary,
};
use crate::{
    clock::{unix_ns, Clock},
    error::{Error, Result},
    options::{Options, Source},
    pidns::PidNamespace,
    reconstruct::Role,
};

pub struct DocumentWriter {
    /// As the user gave it, for messages.
    path: PathBuf,
    /// Where a regular file's document is written until it is renamed into place.
    staging: Option<Staging>,
    file: Option<BufWriter<File>>,
    count: u64,
}

struct Staging {
    tmp: PathBuf,
    dest: PathBuf,
}

impl DocumentWriter {
    /// Opens the output now, so an unwritable path fails before tracing starts.
    /// `header` is the document's leading members, without braces.
    pub fn create(path: &Path, header: &[u8]) -> Result<Self> {
        let fail = |error: io::Error| Error::output(path, error);
        let (file, staging) = match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                return Err(fail(io::Error::other("it is a directory")));
            }
            Ok(meta) if !meta.is_file() => {
                let file = OpenOptions::new().write(true).open(path).map_err(fail)?;
                (file, None)
            }
            Ok(_) => staged(&fs::canonicalize(path).map_err(fail)?).map_err(fail)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => staged(path).map_err(fail)?,
            Err(e) => return Err(fail(e)),
        };
        let mut file = BufWriter::new(file);
        file.write_all(b"{")
            .and_then(|()| file.write_all(header))
            .and_then(|()| file.write_all(b",\"timelines\":["))
            .map_err(fail)?;
        Ok(DocumentWriter {
            path: path.to_path_buf(),
            staging,
            file: Some(file),
            count: 0,
        })
    }

    /// Appends one timeline, already rendered as JSON.
    pub fn timeline(&mut self, json: &[u8]) -> Result<()> {
        let file = self.file.as_mut().expect("written before finish");
        let separator: &[u8] = if self.count > 0 { b",\n" } else { b"\n" };
        self.count += 1;
        file.write_all(separator)
            .and_then(|()| file.write_all(json))
            .map_err(|error| Error::output(&self.path, error))
    }

    /// Closes the document with `trailer` (members after the timelines) and, for a regular
    /// file, moves it into place.
    pub fn finish(mut self, trailer: &[u8]) -> Result<()> {
        let fail = |error| Error::output(&self.path, error);
        let mut file = self.file.take().expect("finished once");
        file.write_all(b"\n],")
            .and_then(|()| file.write_all(trailer))
            .and_then(|()| file.write_all(b"}\n"))
            .map_err(fail)?;
        let file = file.into_inner().map_err(|e| fail(e.into_error()))?;
        if let Some(staging) = self.staging.take() {
            file.sync_all().map_err(fail)?;
            fs::rename(&staging.tmp, &staging.dest).map_err(fail)?;
        }
        Ok(())
    }
}

/// A new temporary file beside `dest`, never one that exists.
fn staged(dest: &Path) -> io::Result<(File, Option<Staging>)> {
    let name = dest
        .file_name()
        .ok_or_else(|| io::Error::other("not a file name"))?;
    let tmp = dest.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)?;
    let staging = Staging {
        tmp,
        dest: dest.to_path_buf(),
    };
    Ok((file, Some(staging)))
}

impl Drop for DocumentWriter {
    /// An unfinished document is never left behind half-written.
    fn drop(&mut self) {
        if let Some(staging) = &self.staging {
            let _ = fs::remove_file(&staging.tmp);
        }
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
