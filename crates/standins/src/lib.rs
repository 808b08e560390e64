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

    /// Waits (without blocking the runtime, which may serve the stand-ins) up to `limit` for the
    /// process to exit; its status, `None` if it is still running.
    pub async fn exited(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

/// A loopback port nothing listens on, held for as long as this value lives: its socket is bound
/// (so no other socket gets the port) but not listening (so a connection is refused at once).
/// For "nothing answers there" settings, and for a server a test starts later on that port
/// ([`ClosedPort::release`]). The port is outside Linux's ephemeral range (32768-60999), which
/// the kernel hands out for port 0 and outgoing connections: only another `ClosedPort` could
/// pick it, and two never hold the same one.
pub struct ClosedPort {
    socket: Option<tokio::net::TcpSocket>,
    pub port: u16,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        use std::hash::{BuildHasher, Hasher};
        for _ in 0..1000 {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u32(std::process::id());
            let port = 20_000 + (hasher.finish() % 12_000) as u16;
            let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
            if socket.bind(([127, 0, 0, 1], port).into()).is_ok() {
                return ClosedPort { socket: Some(socket), port };
            }
        }
        panic!("no closed loopback port found in 20000-31999")
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Lets the port go, for a server about to bind it; returns it.
    pub fn release(mut self) -> u16 {
        self.socket.take();
        self.port
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        ClosedPort::new()
    }
}

/// The address an app logged on the line containing `message` (its `addr=` field), e.g. the
/// port it bound for port 0: `logged_addr(&log, "webhook listening")`.
/// Reads both log formats: text (`addr=...`) and `LOG_FORMAT=json` (`"addr":"..."`).
pub fn logged_addr(log: &str, message: &str) -> Option<std::net::SocketAddr> {
    let line = strip_ansi(log.lines().find(|line| line.contains(message))?);
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) {
        return json["fields"]["addr"].as_str()?.parse().ok();
    }
    let value = line.split_whitespace().find_map(|field| field.strip_prefix("addr="))?;
    value.trim_matches('"').parse().ok()
}

/// `text` without terminal colour sequences (`ESC [ ... m`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Polls `log` every 20 ms until [`logged_addr`] finds `message` there, up to `limit`; fails
/// the test when `proc` exits first or the time runs out.
pub async fn wait_logged_addr(proc: &mut Proc, message: &str, limit: Duration) -> std::net::SocketAddr {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(addr) = logged_addr(&proc.stderr(), message) {
            return addr;
        }
        assert!(proc.is_running(), "exited before logging {message:?}:\n{}", proc.stderr());
        assert!(Instant::now() < deadline, "never logged {message:?}:\n{}", proc.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
