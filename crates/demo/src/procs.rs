//! The `listener` and `webhook` executables: found (and, under cargo, built) next to the demo,
//! run with an explicit environment, stopped with SIGTERM.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const NAMES: [&str; 2] = ["listener", "webhook"];

/// The two executables next to the demo's own. Under cargo (`cargo run`, `cargo test`: the
/// `CARGO` variable is set) they are built first with the demo's profile, so they are never
/// missing or stale; otherwise a missing one is reported with the command that builds it.
pub fn locate() -> Result<[PathBuf; 2]> {
    let exe = std::env::current_exe().context("cannot tell where the demo executable is")?;
    let dir = exe.parent().context("the demo executable has no parent directory")?.to_path_buf();
    let paths = NAMES.map(|name| dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)));
    if let Some(cargo) = std::env::var_os("CARGO") {
        build(&cargo, &dir)?;
    }
    for path in &paths {
        if !path.is_file() {
            bail!(
                "{} not found next to the demo: build both binaries first with `cargo build --release` (or \
                 `cargo build -p listener -p webhook` for a debug demo), or start the demo with `cargo run --release \
                 --bin demo`",
                path.display()
            );
        }
    }
    Ok(paths)
}

/// `cargo build -p listener -p webhook` into the demo's own target directory and profile.
fn build(cargo: &std::ffi::OsStr, exe_dir: &Path) -> Result<()> {
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "listener", "-p", "webhook"]);
    match exe_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
    }
    if let Some(target_dir) = exe_dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    if manifest_dir.is_dir() {
        cmd.current_dir(manifest_dir);
    }
    println!("building listener and webhook when needed (cargo build -p listener -p webhook)...");
    let status = cmd.stdin(Stdio::null()).status().context("cannot run cargo to build listener and webhook")?;
    if !status.success() {
        bail!("`cargo build -p listener -p webhook` failed ({status}); fix the build, then run the demo again");
    }
    Ok(())
}

/// A running binary; killed if dropped while still running.
pub struct Proc {
    pub name: &'static str,
    child: Child,
    pub log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Starts `exe` in `cwd` with exactly `env` (plus PATH); stdout and stderr go to `log`.
    pub fn spawn(name: &'static str, exe: &Path, cwd: &Path, env: &[(&str, String)], log: PathBuf) -> Result<Proc> {
        let out = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(exe);
        cmd.current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (key, value) in env {
            cmd.env(key, value);
        }
        let child = cmd.spawn().with_context(|| format!("cannot start {}", exe.display()))?;
        Ok(Proc { name, child, log, exited: None })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error when the process has already exited, with the last line it logged.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.try_wait() {
            bail!("{} exited early ({status}): {}", self.name, self.last_log_line());
        }
        Ok(())
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// The last line the process logged, without terminal colour codes.
    pub fn last_log_line(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let line = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(nothing logged)");
        without_ansi(line).trim().to_owned()
    }

    /// SIGTERM (the graceful shutdown both binaries implement), then waits up to `limit`;
    /// killed if it is still running then.
    pub async fn stop(&mut self, limit: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait() {
            return Ok(status);
        }
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stdin(Stdio::null())
            .status()
            .context("cannot run `kill -TERM`")?;
        if !sent.success() {
            bail!("`kill -TERM {}` failed ({sent})", self.pid());
        }
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("{} did not stop within {} s of SIGTERM and was killed", self.name, limit.as_secs())
    }
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
fn without_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn colour_codes_are_dropped_from_log_lines() {
        let line = "\u{1b}[2m2026-11-24T12:42:13Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m no answer \u{1b}[3merror\u{1b}[0m\u{1b}[2m=\u{1b}[0mx";
        assert_eq!(super::without_ansi(line), "2026-11-24T12:42:13Z ERROR no answer error=x");
    }
}
