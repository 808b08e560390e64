//! Process plumbing shared by both binaries: settings from `.env` and flags, logs, signals.

use clap::error::ErrorKind;
use std::process::exit;

/// Exit status for configuration errors.
pub const EXIT_CONFIG: i32 = 2;

/// Loads `.env` from the working directory (the environment wins), then parses flags and
/// environment. Any error is one line on stderr and exit status 2: no panic, no backtrace.
/// An optional setting given as an empty value (`TRACE_DIR=` in a copied `.env.example`)
/// counts as unset.
///
/// Call it first thing in `main`, before any thread starts: it edits the environment.
pub fn parse_cli<T: clap::Parser>() -> T {
    if let Err(err) = dotenvy::dotenv()
        && !err.not_found()
    {
        {
            // Never print the offending line: it may hold a secret.
            let detail = match err {
                dotenvy::Error::LineParse(_, index) => format!("syntax error at character {index}"),
                dotenvy::Error::Io(e) => e.to_string(),
                _ => "unreadable".to_owned(),
            };
            fail(&format!("error: cannot read .env: {detail}"));
        }
    }
    for arg in T::command().get_arguments() {
        // Only settings without a default: for the others an empty value means something
        // (`FALLBACK_MESSAGE=` turns the fallback off).
        if let Some(name) = arg.get_env()
            && arg.get_default_values().is_empty()
            && std::env::var_os(name).is_some_and(|v| v.to_string_lossy().trim().is_empty())
        {
            // SAFETY: called at the start of `main`, before the runtime or any other thread
            // exists, so nothing reads the environment concurrently.
            unsafe { std::env::remove_var(name) };
        }
    }
    match T::try_parse() {
        Ok(cli) => cli,
        Err(err) if matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => err.exit(),
        Err(err) => {
            let rendered = err.render().to_string();
            let line = rendered.lines().next().unwrap_or("error: invalid arguments");
            fail(&name_the_variable::<T>(&err, line));
        }
    }
}

/// clap names the flag of a bad value (`'--summary-threshold <N>'`) even when the value came
/// from the environment; say the variable too, since that is where most settings live.
fn name_the_variable<T: clap::CommandFactory>(err: &clap::Error, line: &str) -> String {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) else {
        return line.to_owned();
    };
    let flag = arg.split_whitespace().next().unwrap_or_default();
    let env = T::command().get_arguments().find_map(|a| {
        let long = a.get_long()?;
        (flag.strip_prefix("--") == Some(long)).then(|| a.get_env().map(|e| e.to_string_lossy().into_owned()))?
    });
    match env {
        Some(env) => line.replacen(&format!("'{arg}'"), &format!("{env} ({flag})"), 1),
        None => line.to_owned(),
    }
}

/// Starts a named thread that logs where the calling thread logs: the process's log in the
/// binaries, an in-process app's own log in the tests (`standins::apps`).
pub fn spawn_thread<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    let log = tracing::dispatcher::get_default(|log| log.clone());
    std::thread::Builder::new().name(name.into()).spawn(move || tracing::dispatcher::with_default(&log, work))
}

/// Prints one line and exits with [`EXIT_CONFIG`].
pub fn fail(line: &str) -> ! {
    eprintln!("{line}");
    exit(EXIT_CONFIG)
}

/// A log writer (standard error for the binaries) with every log line passed through the
/// redactor first: whatever a line carries (a visitor's words in an error, a URL with a token),
/// no personal value or secret reaches the log. The formatter writes each event in one call, so
/// a value is never split across calls.
struct Redacting<W>(W);

impl<W: std::io::Write> std::io::Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(privacy::redact_for_log(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The binaries' log, written to the writers `make_writer` makes (one per line): filtered by
/// `rust_log` (`RUST_LOG`; `info` when unset or invalid), JSON lines when `log_format` is `json`
/// (`LOG_FORMAT`), every line redacted. [`init_tracing`] installs it on standard error; an app
/// run in-process (`standins::apps`) logs the same lines into a buffer of its own.
pub fn log_dispatch<W: std::io::Write + 'static>(
    rust_log: Option<&str>,
    log_format: Option<&str>,
    make_writer: impl Fn() -> W + Send + Sync + 'static,
) -> tracing::Dispatch {
    use tracing_subscriber::EnvFilter;
    let filter = rust_log.and_then(|f| EnvFilter::try_new(f).ok()).unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(move || Redacting(make_writer()));
    if log_format.is_some_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().finish().into()
    } else {
        builder.finish().into()
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); `LOG_FORMAT=json` for JSON lines
/// (see [`log_dispatch`]).
pub fn init_tracing() {
    use tracing_subscriber::util::SubscriberInitExt;
    let (rust_log, log_format) = (std::env::var("RUST_LOG").ok(), std::env::var("LOG_FORMAT").ok());
    log_dispatch(rust_log.as_deref(), log_format.as_deref(), std::io::stderr).init();
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called (in a runtime),
/// not when the future is first polled: a signal that comes while the app is still starting is
/// a clean stop, never the default action (death by signal).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        match handlers {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
                }
            }
            _ => {
                tracing::error!("cannot install signal handlers; stop with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The multi-threaded Tokio runtime both binaries run on; built after [`parse_cli`].
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("error: cannot start the async runtime: {e}")))
}

/// What a binary runs: its flags, its validated settings, `--check`, the builder and the app.
/// Both apps implement it; their `main` is [`main`].
pub trait Service: Sized {
    /// Flags and environment.
    type Cli: clap::Parser;
    /// Validated settings (parsing them opens nothing).
    type Settings;
    /// A runtime error (logged with its causes, exit status 1).
    type Error: std::fmt::Display;

    fn settings(cli: Self::Cli) -> Result<Self::Settings, crate::config::ConfigError>;
    /// Whether `--check` was given.
    fn check_only(cli: &Self::Cli) -> bool;
    /// A one-shot command given instead of the service (`webhook redact "text"`): what it
    /// runs, ending in the process's exit status. `None`: run the service.
    fn command(_cli: &Self::Cli) -> Option<std::pin::Pin<Box<dyn Future<Output = i32> + '_>>> {
        None
    }
    /// `--check`: reaches each outside service once; whether all work.
    fn check(settings: &Self::Settings) -> impl Future<Output = bool>;
    /// Opens what the settings name and binds the ports; a failure names its setting.
    fn build(settings: Self::Settings) -> impl Future<Output = Result<Self, crate::config::ConfigError>>;
    /// Runs until `shutdown` resolves.
    fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> impl Future<Output = Result<(), Self::Error>>;
}

/// A binary's `main`: settings or a one-line error (status 2), `--check`, or logs, the app
/// built from the settings (a failure is one line naming the setting, status 2) and run until
/// SIGTERM or SIGINT; exit status 0 on a clean stop, 1 on a runtime error.
pub fn main<S: Service>() -> ! {
    // Files the product creates (the inbox journal, context store, traces, placeholders) are
    // its owner's only: 0600, directories 0700.
    // SAFETY: umask only sets this process's file-creation mask.
    unsafe { libc::umask(0o077) };
    let cli: S::Cli = parse_cli();
    if let Some(command) = S::command(&cli) {
        exit(runtime().block_on(command));
    }
    let check_only = S::check_only(&cli);
    let settings = S::settings(cli).unwrap_or_else(|e| fail(&format!("error: {e}")));
    runtime().block_on(async {
        if check_only {
            println!("ok      configuration: valid");
            exit(if S::check(&settings).await { 0 } else { 1 });
        }
        init_tracing();
        let shutdown = shutdown_signal();
        let app = S::build(settings).await.unwrap_or_else(|e| fail(&format!("error: {e}")));
        match app.run(shutdown).await {
            Ok(()) => exit(0),
            Err(e) => {
                tracing::error!("{e:#}");
                exit(1)
            }
        }
    })
}

/// Settings of an app started in-process (the demo, tests): parsed from `vars`, given as the
/// environment variables they stand for, and nothing else: neither this process's environment
/// nor `.env` is read. An empty value of a setting without a default counts as unset, as in
/// [`parse_cli`].
pub fn parse_vars<T: clap::Parser>(vars: &[(&str, String)]) -> Result<T, clap::Error> {
    let command = T::command();
    let mut args = vec![command.get_name().to_owned()];
    for (var, value) in vars {
        let arg = command.get_arguments().find(|a| a.get_env().is_some_and(|e| e == *var));
        let Some(long) = arg.and_then(|a| a.get_long()) else {
            continue; // not a setting of this app (`RUST_LOG`, the other app's)
        };
        if value.trim().is_empty() && arg.is_some_and(|a| a.get_default_values().is_empty()) {
            continue;
        }
        args.push(format!("--{long}={value}"));
    }
    let command = command.mut_args(|a| a.env(None::<&'static str>));
    let matches = command.try_get_matches_from(args)?;
    T::from_arg_matches(&matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Settings {
        /// `PATH` is set in every test run: it must not leak in.
        #[arg(long, env = "PATH")]
        path: Option<String>,
        #[arg(long, env = "PROCESS_TEST_COUNT", default_value_t = 5)]
        count: usize,
    }

    #[test]
    fn vars_alone_make_the_settings() {
        assert!(std::env::var_os("PATH").is_some());
        let none: Settings = parse_vars(&[("RUST_LOG", "debug".into())]).unwrap();
        assert_eq!((none.path, none.count), (None, 5));
        let set: Settings = parse_vars(&[("PATH", "a=b c".into()), ("PROCESS_TEST_COUNT", "7".into())]).unwrap();
        assert_eq!((set.path.as_deref(), set.count), (Some("a=b c"), 7));
        let empty: Settings = parse_vars(&[("PATH", " ".into())]).unwrap();
        assert_eq!(empty.path, None);
        assert!(parse_vars::<Settings>(&[("PROCESS_TEST_COUNT", "many".into())]).is_err());
    }
}
