//! Command line of `teardown-trace`.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{value_parser, Parser};
use teardown_common::Family;

use crate::{
    filter::Filter,
    options::{Live, Mode, Options, Source},
    output::color::ColorWhen,
};

const EXAMPLES: &str = "\
EXAMPLES:
    teardown-trace                       # every TCP teardown on this host, one line each
    teardown-trace -P 443                # only connections with port 443 at either end
    teardown-trace -p 1234,1240 --json   # sockets owned by those processes, NDJSON
    teardown-trace -d 60 -o closes.json  # trace one minute, write one JSON document
    teardown-trace -x -P 8080            # both ends on this host: the whole exchange at once
    teardown-trace --raw                 # every state transition live, with its owner
    teardown-trace --record run.tdrec    # also save the raw transitions to a file
    teardown-trace --replay run.tdrec    # rebuild timelines from a recording (no root)
    teardown-trace --leaks               # CLOSE_WAIT per process and port, TIME_WAIT per port, now
    teardown-trace --summary -P 443      # a table per process and port, redrawn every 2 s
    teardown-trace --metrics 127.0.0.1:9464 --by-port 443,8080   # Prometheus metrics
    teardown-trace -P 8080 --mermaid closes.md --perfetto closes.pftrace   # pictures
    teardown-trace --replay run.tdrec --mermaid closes.md                  # the same, from a recording

ROLES:
    active        sent the first FIN (ESTABLISHED -> FIN_WAIT1)
    passive       received the first FIN (ESTABLISHED -> CLOSE_WAIT)
    simultaneous  both FINs crossed (went through CLOSING)
    reset         closed without a FIN exchange (RST sent or received)
    unknown       nothing seen tells (JSON: null)";

/// The release and the commit it was built from (teardown-user/build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("TEARDOWN_COMMIT"),
    ")"
);

#[derive(Parser, Debug, Clone, PartialEq, Eq)]
#[command(
    name = "teardown-trace",
    version = VERSION,
    about = "Show how each TCP connection on this host ends: who closed first, when each \
             FIN and ACK happened, and how long each side spent in every closing state.",
    override_usage = "teardown-trace [OPTIONS]",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// Only sockets owned by these processes (their softirq transitions included)
    #[arg(short = 'p', long = "pid", value_name = "PID[,PID...]", value_delimiter = ',',
          value_parser = value_parser!(u32).range(1..))]
    pub pids: Vec<u32>,

    /// Only connections with one of these ports, local or remote
    #[arg(short = 'P', long = "port", value_name = "PORT[,PORT...]", value_delimiter = ',',
          value_parser = value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,

    /// Only connections with one of these local ports
    #[arg(long = "lport", value_name = "PORT[,PORT...]", value_delimiter = ',',
          value_parser = value_parser!(u16).range(1..))]
    pub lports: Vec<u16>,

    /// Only connections with one of these remote ports
    #[arg(long = "rport", value_name = "PORT[,PORT...]", value_delimiter = ',',
          value_parser = value_parser!(u16).range(1..))]
    pub rports: Vec<u16>,

    /// Only IPv4
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Only IPv6
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Stop after this many seconds (default: until Ctrl-C or SIGTERM)
    #[arg(short = 'd', long = "duration", value_name = "SECS",
          value_parser = value_parser!(u64).range(1..), conflicts_with = "replay")]
    pub duration: Option<u64>,

    /// Print NDJSON on stdout: one timeline per line as each teardown completes
    /// (with --raw: one transition per line)
    #[arg(long)]
    pub json: bool,

    /// Write all timelines to FILE as one JSON document at exit (a regular file is replaced
    /// only by a complete one, keeping its mode and owner; a device, FIFO or pipe is written
    /// into)
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        conflicts_with = "raw"
    )]
    pub output: Option<PathBuf>,

    /// Print every state transition as it happens instead of timelines
    #[arg(long)]
    pub raw: bool,

    /// Also print each connection whose two ends are both on this host as one exchange,
    /// in time order, with what each transition means on the wire
    #[arg(short = 'x', long, conflicts_with_all = ["json", "raw"])]
    pub exchange: bool,

    /// Follow each socket through its TIME_WAIT mini-socket to the end (expired, or killed
    /// by a reuse, a reset or its namespace going): its timeline is printed then, up to two
    /// minutes later. Needs fentry (the warning says when the kernel refuses it)
    #[arg(long = "time-wait", conflicts_with = "raw")]
    pub time_wait: bool,

    /// Also draw each connection's close as a Mermaid sequence diagram, into FILE (Markdown,
    /// one diagram per connection)
    #[arg(long, value_name = "FILE", conflicts_with = "raw")]
    pub mermaid: Option<PathBuf>,

    /// Also write a Perfetto trace to FILE (open it in ui.perfetto.dev): a track per socket
    /// under its process, a slice per closing state, FINs as flows between the two ends
    #[arg(long, value_name = "FILE", conflicts_with = "raw")]
    pub perfetto: Option<PathBuf>,

    /// Also save the raw transitions to FILE, for --replay
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    pub record: Option<PathBuf>,

    /// Rebuild timelines from a recording instead of tracing (needs no privileges)
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,

    /// Instead of a line per teardown, a summary every SECS seconds [default: 2]: per process
    /// and local port, closes by role, resets, FIN retransmissions, phase latency
    /// percentiles, sockets closing now. Redrawn in place on a terminal; with --json, a JSON
    /// object per line
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2",
          value_parser = value_parser!(u64).range(1..), conflicts_with_all = ["raw", "exchange"])]
    pub summary: Option<u64>,

    /// Serve Prometheus metrics (OpenMetrics) at http://ADDR/metrics, e.g. 127.0.0.1:9464
    #[arg(long, value_name = "ADDR", conflicts_with = "raw")]
    pub metrics: Option<SocketAddr>,

    /// Local ports counted apart in --summary and --metrics, the others as "other"
    /// [default: the ports of -P and --lport]
    #[arg(long = "by-port", value_name = "PORT[,PORT...]", value_delimiter = ',',
          value_parser = value_parser!(u16).range(1..))]
    pub by_port: Vec<u16>,
    /// Colour the roles, resets and sockets still closing: auto (on a terminal, unless
    /// NO_COLOR is set), always, never
    #[arg(long, value_name = "WHEN", value_enum, default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,

    /// Print a completion script for SHELL (bash, zsh, fish, ...) and exit
    #[arg(long, value_name = "SHELL", exclusive = true)]
    pub completions: Option<clap_complete::Shell>,

    /// Print the man page (roff) and exit
    #[arg(long, exclusive = true)]
    pub man: bool,

    /// Ring buffer size in MiB (a power of two); raise it if events are lost
    // 16, not 4: while the nice-10 consumer is preempted it can hold an allocator or
    // memory-map lock the real-time drain then waits on; a CI storm lost 45,507 events
    // (about 10 MB) behind a 4 MiB ring that way.
    #[arg(long = "ring-mb", value_name = "MIB", default_value_t = 16,
          value_parser = ring_mb)]
    pub ring_mb: u32,

    /// Live sockets whose owner the kernel can remember at once; raise it on hosts with more
    #[arg(long = "max-sockets", value_name = "N", default_value_t = 262_144,
          value_parser = value_parser!(u32).range(1..=16_777_216))]
    pub max_sockets: u32,

    /// Print the sockets already closing on this host and exit: CLOSE_WAIT per process and
    /// local port (how long since the peer's FIN), TIME_WAIT per port and remote endpoint
    /// (with --json: one JSON object). Needs no privileges for what the user may see
    #[arg(long, conflicts_with_all = ["replay", "raw", "record", "output", "duration", "exchange",
          "pids", "ports", "lports", "rports", "ipv4", "ipv6"])]
    pub leaks: bool,

    /// For `cargo xtask bench` only: attach every hook with programs that return at once,
    /// to measure what the hooks alone cost (the floor). Traces nothing
    #[arg(long = "bench-floor", hide = true, conflicts_with = "replay")]
    pub bench_floor: bool,
}

fn ring_mb(s: &str) -> Result<u32, String> {
    let mb: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of MiB"))?;
    if mb.is_power_of_two() && mb <= 1024 {
        Ok(mb)
    } else {
        Err(format!("{mb} is not a power of two from 1 to 1024"))
    }
}

impl Cli {
    /// The run this command line asks for, or a usage error.
    pub fn options(&self) -> Result<Options, String> {
        let source = match &self.replay {
            Some(path) => Source::Replay(path.clone()),
            None => Source::Live(Live {
                duration: self.duration.map(Duration::from_secs),
                ring_bytes: self.ring_mb << 20,
                max_sockets: self.max_sockets,
                record: self.record.clone(),
                floor: self.bench_floor,
            }),
        };
        let mode = match (self.raw, self.json) {
            _ if self.summary.is_some() => Mode::Summary,
            (false, false) => Mode::Text,
            (false, true) => Mode::Ndjson,
            (true, false) => Mode::RawText,
            (true, true) => Mode::RawJson,
        };
        let files = [
            ("--replay", &self.replay),
            ("--record", &self.record),
            ("-o", &self.output),
            ("--mermaid", &self.mermaid),
            ("--perfetto", &self.perfetto),
        ];
        for (i, (first, a)) in files.iter().enumerate() {
            for (second, b) in &files[i + 1..] {
                if let (Some(a), Some(b)) = (a, b) {
                    if same_file(a, b) {
                        return Err(format!(
                            "{first} and {second} name the same file ({}): one would overwrite the other",
                            b.display()
                        ));
                    }
                }
            }
        }
        Ok(Options {
            source,
            filter: self.filter(),
            mode,
            exchange: self.exchange,
            follow_time_wait: self.time_wait,
            document: self.output.clone(),
            mermaid: self.mermaid.clone(),
            perfetto: self.perfetto.clone(),
            color: self.color.enabled(),
            summary: self.summary.map(Duration::from_secs),
            json_summary: self.json,
            metrics: self.metrics,
            counted_ports: self.counted_ports(),
        })
    }

    /// The local ports `--summary` and `--metrics` count apart.
    fn counted_ports(&self) -> Vec<u16> {
        if self.by_port.is_empty() {
            self.ports.iter().chain(&self.lports).copied().collect()
        } else {
            self.by_port.clone()
        }
    }

    fn filter(&self) -> Filter {
        Filter {
            ports: self.ports.clone(),
            lports: self.lports.clone(),
            rports: self.rports.clone(),
            pids: self.pids.clone(),
            family: match (self.ipv4, self.ipv6) {
                (true, _) => Some(Family::Ipv4),
                (_, true) => Some(Family::Ipv6),
                _ => None,
            },
        }
    }
}

/// Whether two paths lead to one file: the same inode when both exist, else the same
/// place once the directory is resolved.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(a), Ok(b)) = (fs::metadata(a), fs::metadata(b)) {
        return (a.dev(), a.ino()) == (b.dev(), b.ino());
    }
    let place = |p: &Path| {
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        (
            fs::canonicalize(dir).ok(),
            p.file_name().map(|n| n.to_owned()),
        )
    };
    place(a) == place(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("teardown-trace").chain(args.iter().copied()))
    }

    #[test]
    fn lists_and_filters() {
        let cli = parse(&["-p", "10,20", "-P", "80", "--lport", "443,8443", "-6"]).unwrap();
        let f = cli.filter();
        assert_eq!(f.pids, vec![10, 20]);
        assert_eq!(f.ports, vec![80]);
        assert_eq!(f.lports, vec![443, 8443]);
        assert_eq!(f.family, Some(Family::Ipv6));
        assert_eq!(parse(&[]).unwrap().filter(), Filter::default());
    }

    #[test]
    fn summary_interval_and_counted_ports() {
        assert_eq!(parse(&["--summary"]).unwrap().summary, Some(2));
        assert_eq!(parse(&["--summary", "5"]).unwrap().summary, Some(5));
        let cli = parse(&["--summary", "-P", "80", "--lport", "443"]).unwrap();
        assert_eq!(cli.summary, Some(2));
        assert_eq!(cli.counted_ports(), vec![80, 443]);
        let cli = parse(&["-P", "80", "--by-port", "8080,9090"]).unwrap();
        assert_eq!(cli.counted_ports(), vec![8080, 9090]);
    }

    #[test]
    fn bad_input_is_refused_with_a_message() {
        for (args, needle) in [
            (&["-P", "70000"][..], "70000"),
            (&["-P", "0"][..], "0"),
            (&["-p", "abc"][..], "abc"),
            (&["--bogus"][..], "--bogus"),
            (&["-4", "-6"][..], "cannot be used with"),
            (&["-d", "0"][..], "0"),
            (&["--raw", "-o", "x.json"][..], "cannot be used with"),
            (
                &["--replay", "a", "--record", "b"][..],
                "cannot be used with",
            ),
            (&["--ring-mb", "3"][..], "power of two"),
            (&["--max-sockets", "0"][..], "0"),
            (&["-x", "--json"][..], "cannot be used with"),
            (&["--leaks", "-P", "80"][..], "cannot be used with"),
            (&["--summary", "0"][..], "0"),
            (&["--summary", "--raw"][..], "cannot be used with"),
            (&["--metrics", "9464"][..], "9464"),
            (
                &["--metrics", "127.0.0.1:9464", "--raw"][..],
                "cannot be used with",
            ),
        ] {
            let err = parse(args).expect_err(&format!("{args:?} accepted"));
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn two_outputs_on_one_file_are_refused() {
        let dir = std::env::temp_dir();
        let existing = dir.join(format!("td-cli-{}.tdrec", std::process::id()));
        std::fs::write(&existing, b"x").unwrap();
        let e = existing.to_str().unwrap();
        let refused = |args: &[&str]| parse(args).unwrap().options().unwrap_err();
        assert!(refused(&["--replay", e, "-o", e]).contains("--replay and -o"));
        let fresh = dir.join("td-cli-fresh.json");
        let f = fresh.to_str().unwrap();
        assert!(refused(&["-o", f, "--record", f]).contains("same file"));
        let via_dot = format!("{}/./td-cli-fresh.json", dir.display());
        assert!(refused(&["-o", f, "--record", &via_dot]).contains("same file"));
        assert!(parse(&["-o", f, "--record", e]).unwrap().options().is_ok());
        std::fs::remove_file(&existing).ok();
    }

    #[test]
    fn the_version_names_the_commit() {
        let version = parse(&["--version"]).unwrap_err().to_string();
        assert!(version.starts_with("teardown-trace 0."), "{version}");
        assert!(version.contains(env!("TEARDOWN_COMMIT")), "{version}");
    }

    /// README's Usage block is `teardown-trace -h` (wrapped for reading): a flag or an
    /// example changed in one and not the other fails here.
    #[test]
    fn readme_usage_is_the_help() {
        use clap::CommandFactory;
        let readme = include_str!("../../README.md");
        let block = readme
            .split_once("## Usage\n\n```\n")
            .and_then(|(_, rest)| rest.split_once("```"))
            .expect("README has a Usage block")
            .0;
        let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
        let help = Cli::command().render_help().to_string();
        assert_eq!(words(block), words(&help));
    }

    #[test]
    fn help_has_usage_and_examples() {
        let help = parse(&["--help"]).unwrap_err().to_string();
        assert!(help.contains("Usage: teardown-trace [OPTIONS]"));
        assert!(help.contains("EXAMPLES:"));
        assert!(help.contains("--replay"));
    }

    #[test]
    fn the_bench_floor_is_not_offered_but_understood() {
        let help = parse(&["--help"]).unwrap_err().to_string();
        assert!(!help.contains("--bench-floor"), "{help}");
        let floor = |args: &[&str]| match parse(args).unwrap().options().unwrap().source {
            Source::Live(live) => live.floor,
            Source::Replay(_) => panic!("not live"),
        };
        assert!(floor(&["--bench-floor", "--json"]));
        assert!(!floor(&["--json"]));
    }
}
