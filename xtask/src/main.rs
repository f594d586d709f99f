//! `cargo xtask`: the project's own commands. Each one first installs what is missing
//! (quickly skipped when everything is there), so a fresh machine needs nothing else.
//!
//! - `cargo xtask run -- ARGS`  builds and runs `teardown-trace ARGS`
//! - `cargo xtask test`         runs every test (the kernel tests, here and on the matrix, need root)
//! - `cargo xtask bench`        measures the cost of tracing under connection churn
//! - `cargo xtask vm-test`      runs the kernel tests on 5.10, 6.1, 6.12 and the newest kernel
//! - `cargo xtask setup`        only installs the toolchain pieces

mod bench;
mod setup;
mod snapshot_bench;
mod vmtest;

use std::process::{Command, ExitCode};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the eBPF toolchain pieces that are missing
    Setup,
    /// Build (release) and run teardown-trace with the given arguments
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit tests, and as root the kernel tests, here and then on other
    /// kernels under QEMU (`vm-test`: 5.10, 6.1, 6.12 and the newest)
    Test {
        /// Skip the other kernels: this kernel's tests only (the matrix takes about 45
        /// minutes on 2 cores)
        #[arg(long)]
        no_vm: bool,
        /// Extra arguments for `cargo test`
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmark connection churn untraced, under teardown-trace and under tcpstates
    Bench(bench::Options),
    /// Run the kernel tests on other kernels, each booted under QEMU
    VmTest(vmtest::Options),
    /// Inside a vm-test guest: probe the tracer and run the kernel tests
    #[command(hide = true)]
    VmGuest(vmtest::GuestOptions),
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    // The guest has the host's tools, read-only: nothing to install there.
    if let Cmd::VmGuest(options) = &cli.command {
        return vmtest::guest(options);
    }
    let env = setup::ensure()?;
    match cli.command {
        Cmd::Setup | Cmd::VmGuest(_) => Ok(()),
        Cmd::Run { args } => {
            cargo(&env, &["build", "--release", "--bins"])?;
            let tracer = workspace_root().join("target/release/teardown-trace");
            let status = Command::new(&tracer)
                .args(args)
                .status()
                .with_context(|| format!("starting {}", tracer.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Test { no_vm, args } => {
            let mut all = vec!["test", "--workspace"];
            all.extend(args.iter().map(String::as_str));
            cargo(&env, &all)?;
            // SAFETY: geteuid has no preconditions.
            let root = unsafe { libc::geteuid() } == 0;
            // Arguments pick some tests: a quick run, not the whole matrix.
            if no_vm || !args.is_empty() || !root {
                eprintln!("xtask: not running the kernel matrix (cargo xtask vm-test)");
                return Ok(());
            }
            vmtest::run(&env, &vmtest::Options::default())
        }
        Cmd::Bench(options) => {
            cargo(&env, &["build", "--release", "--bins"])?;
            bench::run(&options)
        }
        Cmd::VmTest(options) => vmtest::run(&env, &options),
    }
}

/// Runs cargo in the workspace root with the eBPF toolchain's environment.
pub fn cargo(env: &setup::BuildEnv, args: &[&str]) -> Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(workspace_root())
        .envs(env.vars())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
