//! What the test lab (`teardown-lab`) and the kernel tests share: running a command, and a
//! private network namespace that goes away with its owner. Not part of the tracer.

use std::process::{Command, Output};

/// Runs `cmd` to completion; its stderr is the error when it fails.
pub fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace made here, with its loopback up; deleted when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: &str) -> Result<Netns, String> {
        run(Command::new("ip").args(["netns", "add", name]))?;
        let netns = Netns { name: name.into() };
        Netns::loopback_up(name)?;
        Ok(netns)
    }

    /// Brings up the loopback of namespace `name` (down in a namespace just made).
    pub fn loopback_up(name: &str) -> Result<(), String> {
        run(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"])).map(drop)
    }

    /// Deletes namespace `name`, whoever made it; gone already is no error.
    pub fn delete(name: &str) {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        Netns::delete(&self.name);
    }
}
