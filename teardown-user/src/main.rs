//! `teardown-trace`: the binary's edge. Catches stop signals first, parses the command line
//! into the run's options, runs, and turns any error into one line on stderr and a
//! non-zero exit.

use std::{io::Write as _, process::ExitCode};

use clap::Parser as _;
use teardown_user::{
    cli::Cli,
    limits::{self, OneLineOutOfMemory},
    options::{Mode, Source},
    signals::StopSignals,
    snapshot, trace,
};

#[global_allocator]
static ALLOCATOR: OneLineOutOfMemory = OneLineOutOfMemory;

fn main() -> ExitCode {
    limits::return_large_blocks();
    // Before anything else: a signal during start-up still ends the run cleanly.
    let signals = match StopSignals::install() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("teardown-trace: error: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A bug still ends in one line, never a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let message = info.to_string().replace('\n', " ");
        eprintln!("teardown-trace: internal error: {message}")
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print in full; a usage error is one line.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_error(&one_line(&e)),
    };
    let generated = match (cli.completions, cli.man) {
        (Some(shell), _) => Some(teardown_user::docs::completions(shell)),
        (None, true) => Some(teardown_user::docs::man()),
        (None, false) => None,
    };
    if let Some(text) = generated {
        // A reader that went away (`| head`) is not an error.
        return match std::io::stdout().write_all(&text) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                eprintln!("teardown-trace: error: {e}");
                ExitCode::FAILURE
            }
            _ => ExitCode::SUCCESS,
        };
    }
    if cli.leaks {
        return match snapshot::print_leaks(cli.json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("teardown-trace: error: cannot show leaks: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let options = match cli.options() {
        Ok(options) => options,
        Err(message) => return usage_error(&format!("error: {message}")),
    };
    let report = match trace::run(&options, signals) {
        Ok(report) => report,
        Err(e) => {
            match options.source {
                Source::Live(_) => eprintln!("teardown-trace: error: cannot trace: {e}"),
                // The message names the recording.
                Source::Replay(_) => eprintln!("teardown-trace: error: {e}"),
            }
            return ExitCode::FAILURE;
        }
    };
    // The summary joins the human output; machine output on stdout stays pure.
    let line = report.summary.line();
    if options.mode != Mode::Text {
        eprintln!("{line}");
    } else {
        // stdout may be gone (`| head`): nothing left to tell it.
        let _ = writeln!(std::io::stdout(), "\n{line}");
    }
    for failure in &report.failures {
        eprintln!("teardown-trace: error: {failure}");
    }
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// clap's first line, with the values it would take where it lists them on the next.
fn one_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("bad usage");
    match e.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(values)) if !values.is_empty() => {
            format!("{first} (one of: {})", values.join(", "))
        }
        _ => first.to_string(),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("teardown-trace: {message}");
    ExitCode::from(2)
}
