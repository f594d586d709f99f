//! Builds the eBPF crate for the BPF target so that `cargo build` yields one self-contained
//! binary (the object is embedded with `include_bytes_aligned!`).
fn main() -> anyhow::Result<()> {
    commit();
    // The eBPF crate needs `-Z build-std=core`: nightly, or any toolchain with
    // RUSTC_BOOTSTRAP=1 (see README, "Building without nightly").
    println!("cargo:rerun-if-env-changed=TEARDOWN_EBPF_TOOLCHAIN");
    let toolchain = std::env::var("TEARDOWN_EBPF_TOOLCHAIN").ok();
    let toolchain = match toolchain.as_deref() {
        None | Some("") | Some("nightly") => aya_build::Toolchain::Nightly,
        Some(name) => aya_build::Toolchain::Custom(name),
    };
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../teardown-ebpf");
    let package = aya_build::Package {
        name: "teardown-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], toolchain)
}

/// `TEARDOWN_COMMIT` for `--version`: the commit this was built from, or a plain word when
/// the source is not a git checkout (a crate tarball, an exported tree).
fn commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    // Built again when HEAD moves: a commit, a checkout (logs/HEAD grows with both).
    for path in ["HEAD", "logs/HEAD"] {
        if let Some(file) = git(&["rev-parse", "--path-format=absolute", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    let commit = commit.map_or_else(
        || "commit unknown: not built from git".into(),
        |c| format!("commit {c}"),
    );
    println!("cargo:rustc-env=TEARDOWN_COMMIT={commit}");
}
