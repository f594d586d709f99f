//! Command line of `teardown-trace`.

use std::path::PathBuf;

use clap::{value_parser, Parser};

use crate::{
    filter::{Family, Filter},
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

ROLES:
    active        sent the first FIN (ESTABLISHED -> FIN_WAIT1)
    passive       received the first FIN (ESTABLISHED -> CLOSE_WAIT)
    simultaneous  both FINs crossed (went through CLOSING)
    reset         closed without a FIN exchange (RST sent or received)";

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

    /// At exit, write all timelines to FILE as one JSON document (atomically)
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
    #[arg(long = "ring-mb", value_name = "MIB", default_value_t = 4,
          value_parser = ring_mb)]
    pub ring_mb: u32,

    /// Live sockets whose owner the kernel can remember at once; raise it on hosts with more
    #[arg(long = "max-sockets", value_name = "N", default_value_t = 131_072,
          value_parser = value_parser!(u32).range(1..=16_777_216))]
    pub max_sockets: u32,
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
    pub fn filter(&self) -> Filter {
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
        ] {
            let err = parse(args).expect_err(&format!("{args:?} accepted"));
            assert!(err.to_string().contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn the_version_names_the_commit() {
        let version = parse(&["--version"]).unwrap_err().to_string();
        assert!(version.starts_with("teardown-trace 0."), "{version}");
        assert!(version.contains(env!("TEARDOWN_COMMIT")), "{version}");
    }

    #[test]
    fn help_has_usage_and_examples() {
        let help = parse(&["--help"]).unwrap_err().to_string();
        assert!(help.contains("Usage: teardown-trace [OPTIONS]"));
        assert!(help.contains("EXAMPLES:"));
        assert!(help.contains("--replay"));
    }
}
