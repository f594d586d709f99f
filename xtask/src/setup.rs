//! Installs, only when missing, what building and testing the eBPF program needs:
//! rust-src for the eBPF toolchain, the LLVM that bpf-linker links against, bpf-linker,
//! and the tools the test lab and the benchmark use (iproute2, nftables, libbpf-tools, bpftool,
//! tcpdump, and the Prometheus server that scrapes `--metrics` in its test), and what the
//! picture tests validate with (mermaid-cli on Debian's Chromium, Perfetto's trace schema),
//! kept in `TOOLS` outside the checkout.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

/// Where the picture tests' renderers are installed, unless `TEARDOWN_TOOLS` says otherwise
/// (teardown-user/tests/pictures.rs reads the same).
const TOOLS: &str = "/var/cache/teardown-tools";

/// How to build the eBPF crate on this machine.
pub struct BuildEnv {
    /// Passed to teardown-user/build.rs; `None` means nightly.
    toolchain: Option<String>,
    path: String,
}

impl BuildEnv {
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![("PATH", self.path.clone())];
        if let Some(toolchain) = &self.toolchain {
            // A stable toolchain builds core for the BPF target only with bootstrap mode.
            vars.push(("TEARDOWN_EBPF_TOOLCHAIN", toolchain.clone()));
            vars.push(("RUSTC_BOOTSTRAP", "1".into()));
        }
        vars
    }
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {cmd:?}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

struct Apt {
    updated: bool,
}

impl Apt {
    fn install(&mut self, packages: &[&str]) -> Result<()> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!(
                "missing {}: install it (apt-get install {}) or run as root",
                packages.join(", "),
                packages.join(" ")
            );
        }
        if !self.updated {
            run(Command::new("apt-get").args(["update", "-q"]))?;
            self.updated = true;
        }
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    }
}

/// Debian packages of `packages` that are not installed.
fn not_installed<'a>(packages: &[&'a str]) -> Vec<&'a str> {
    packages
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|status| !status.ends_with("install ok installed"))
        })
        .collect()
}

/// Installs those of the Debian `packages` that are not installed yet.
pub fn install_missing(packages: &[&str]) -> Result<()> {
    let missing = not_installed(packages);
    if missing.is_empty() {
        return Ok(());
    }
    Apt { updated: false }.install(&missing)
}

fn has(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(program).is_file()
}

pub fn ensure() -> Result<BuildEnv> {
    let mut apt = Apt { updated: false };
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_bin = PathBuf::from(&home).join(".cargo/bin");
    let current = std::env::var("PATH").unwrap_or_default();
    let path = if std::env::split_paths(&current).any(|p| p == cargo_bin) {
        current
    } else {
        format!("{}:{current}", cargo_bin.display())
    };

    // 1. A toolchain that can build `core` for the BPF target: nightly, else stable in
    //    bootstrap mode (see README).
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    let toolchain = if toolchains.lines().any(|l| l.starts_with("nightly")) {
        "nightly"
    } else {
        "stable"
    };
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        toolchain,
    ]))
    .unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            toolchain,
        ]))?;
    }

    // 2. bpf-linker, built against the LLVM of that toolchain.
    let linker = cargo_bin.join("bpf-linker");
    let linker_ok = output(Command::new(&linker).arg("--version")).is_some()
        || output(Command::new("bpf-linker").arg("--version")).is_some();
    if !linker_ok {
        let version = output(Command::new("rustc").args([&format!("+{toolchain}"), "-vV"]))
            .context("asking rustc for its LLVM version")?;
        let major = version
            .lines()
            .find_map(|l| l.strip_prefix("LLVM version: "))
            .and_then(|v| v.split('.').next())
            .context("rustc does not say its LLVM version")?
            .to_string();
        let llvm = format!("/usr/lib/llvm-{major}");
        // llvm-config alone is not enough: bpf-linker links the development libraries.
        let dev = [
            format!("llvm-{major}-dev"),
            format!("libpolly-{major}-dev"),
            "libzstd-dev".into(),
        ];
        let missing = not_installed(&dev.iter().map(String::as_str).collect::<Vec<_>>());
        if !missing.is_empty() {
            apt.install(&missing)?;
        }
        // bpf-linker's build finds LLVM through llvm-config on PATH.
        let llvm_path = format!("{llvm}/bin:{path}");
        run(Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                "^0.13",
                "--no-default-features",
            ])
            .args(["--features", &format!("llvm-{major}")])
            .env("PATH", &llvm_path))?;
    }

    // 3. What the test lab and the benchmark drive: namespaces, firewall rules, the peer,
    //    the BPF run-time statistics the benchmark and the churn test read, the packet
    //    capture the wire tests compare every wave with, and a real Prometheus for the
    //    metrics test.
    for (program, package) in [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("tcpstates", "libbpf-tools"),
        ("bpftool", "bpftool"),
        ("tcpdump", "tcpdump"),
        ("prometheus", "prometheus"),
    ] {
        if !has(program) {
            apt.install(&[package])?;
        }
    }

    // 4. The renderers that judge the pictures (teardown-user/tests/pictures.rs): mermaid-cli
    //    driving Debian's Chromium (never a downloaded browser), and the `perfetto` package
    //    for its protobuf schema of traces.
    let tools = PathBuf::from(std::env::var_os("TEARDOWN_TOOLS").unwrap_or_else(|| TOOLS.into()));
    if !tools.join("mermaid/node_modules/.bin/mmdc").is_file() {
        for (program, package) in [("chromium", "chromium"), ("npm", "npm")] {
            if !has(program) {
                apt.install(&[package])?;
            }
        }
        let dir = tools.join("mermaid");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        run(Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "@mermaid-js/mermaid-cli@11",
            ])
            .current_dir(&dir)
            .env("PUPPETEER_SKIP_DOWNLOAD", "1"))?;
    }
    let python = tools.join("venv/bin/python");
    if output(Command::new(&python).args(["-c", "import perfetto.protos"])).is_none() {
        if output(Command::new("python3").args(["-m", "venv", "--help"])).is_none() {
            apt.install(&["python3-venv"])?;
        }
        run(Command::new("python3")
            .args(["-m", "venv"])
            .arg(tools.join("venv")))?;
        run(Command::new(&python).args(["-m", "pip", "install", "-q", "perfetto"]))?;
    }

    Ok(BuildEnv {
        toolchain: (toolchain != "nightly").then(|| toolchain.to_string()),
        path,
    })
}
