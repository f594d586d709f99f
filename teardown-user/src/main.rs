//! `teardown-trace`: the binary's edge. Parses the command line, runs, and turns any error
//! into one line on stderr and a non-zero exit.

use std::{io::Write as _, process::ExitCode};

use anyhow::Context as _;
use clap::Parser as _;
use teardown_user::{cli::Cli, trace};

fn main() -> ExitCode {
    // A bug still ends in one line, never a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("teardown-trace: internal error: {info}")
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print in full; a usage error is one line.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.to_string();
            eprintln!(
                "teardown-trace: {}",
                rendered.lines().next().unwrap_or("bad usage")
            );
            return ExitCode::from(2);
        }
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
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("teardown-trace: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let what = match &cli.replay {
        Some(path) => format!("cannot replay {}", path.display()),
        None => "cannot trace".to_string(),
    };
    let summary = trace::run(cli).context(what)?;
    // The summary joins the human output; machine output on stdout stays pure.
    if cli.json || cli.raw {
        eprintln!("{}", summary.line());
    } else {
        // stdout may be gone (`| head`): nothing left to tell it.
        let _ = writeln!(std::io::stdout(), "\n{}", summary.line());
    }
    Ok(())
}
