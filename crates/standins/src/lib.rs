//! Loopback stand-ins for the outside services, for the tests, the demo and the benchmarks:
//! Autoplay ([`sse_server`]), OpenAI ([`llm`], and wiremock answers in [`stand_ins`] where a
//! test asserts on requests) and Crisp ([`crisp`], and wiremock in [`stand_ins`]); and the
//! harness that runs the listener and the webhook against them: in-process ([`apps`]) or the
//! binaries ([`Proc`], [`stand_ins::Webhook`], [`bin!`]).

pub use clock::mono_ns;

pub mod apps;
pub mod clock;
pub mod crisp;
pub mod llm;
pub mod sse_server;
pub mod stand_ins;

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The path of one of the product's binaries, as Cargo built it for this test run
/// (`CARGO_BIN_EXE_<name>`, set for the integration tests of the package that owns it).
#[macro_export]
macro_rules! bin {
    ($name:literal) => {
        ::std::path::Path::new(env!(concat!("CARGO_BIN_EXE_", $name)))
    };
}

/// A running binary, killed when dropped; its stderr is collected for assertions.
pub struct Proc {
    child: Child,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Starts the binary `exe` (see [`bin!`]) in `cwd` with exactly `env` (plus PATH) and `args`.
    pub fn spawn(exe: &std::path::Path, cwd: &std::path::Path, env: &[(&str, String)], args: &[&str]) -> Proc {
        Proc::spawn_limited(exe, cwd, env, args, None)
    }

    /// [`Proc::spawn`] with the open-file limit (soft and hard) set to `open_files`, as
    /// `ulimit -n` would.
    pub fn spawn_limited(
        exe: &std::path::Path,
        cwd: &std::path::Path,
        env: &[(&str, String)],
        args: &[&str],
        open_files: Option<u64>,
    ) -> Proc {
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = Command::new(exe);
        cmd.current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        cmd.envs(test_redis(cwd));
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(limit) = open_files {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit { rlim_cur: limit as libc::rlim_t, rlim_max: limit as libc::rlim_t };
            // SAFETY: only setrlimit runs between fork and exec, an async-signal-safe call.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = cmd.spawn().expect("spawn binary");
        Proc { child, stderr_path, _dir: dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").args([&format!("-{signal}"), &self.pid().to_string()]).status().expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `REDIS_URL` and `REDIS_KEY_PREFIX` for an app started in `cwd`, when `TEST_REDIS_URL` is
/// set: the same tests then run against Redis, apps started in one working directory (one test)
/// share a key prefix, and other tests never see their keys.
pub fn test_redis(cwd: &std::path::Path) -> Vec<(&'static str, String)> {
    match std::env::var("TEST_REDIS_URL") {
        Ok(url) => vec![("REDIS_URL", url), ("REDIS_KEY_PREFIX", redis_prefix_for(cwd))],
        Err(_) => Vec::new(),
    }
}

/// A Redis key prefix unique to one test's working directory.
pub fn redis_prefix_for(cwd: &std::path::Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    cwd.hash(&mut hasher);
    std::process::id().hash(&mut hasher);
    format!("test-{:016x}:", hasher.finish())
}

/// Polls `check` every 20 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a file, empty when absent.
pub fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Raises this process's soft open-file limit to its hard limit (tests that open many sockets);
/// returns the limit now in force.
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}
