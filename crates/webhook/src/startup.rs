//! The one place that builds the running webhook from validated [`Settings`]: it opens what
//! the settings name (the context store, the trace directory, the prompt file, the inbox
//! journal), binds the ports and wires the parts. `main`, the in-process tests and the demo all
//! start the webhook through its [`Service`] implementation.

use crate::config::{Cli, Command, MAX_WAITING_PER_CONVERSATION, Settings};
use crate::context::{ContextScope, ContextSource};
use crate::knowledge::KnowledgeBase;
use crate::mcp;
use crate::outcomes::{self, Outcomes};
use crate::placeholders::PlaceholderBook;
use crate::proactive::{OfferDeps, Offers};
use crate::replies::{
    ContextStep, Conversations, FloorStep, HandOffStep, KnowledgeStep, LlmStep, MarkDoneStep, OutcomeStep, Pipeline,
    PostStep, PromptStep, RedactionStep, Replies, TraceStep,
};
use crate::routes::{AppState, metrics_router, router};
use crate::server::{self, ConnectionLimits};
use crate::traces::TraceWriter;
use answer::prompt::DEFAULT_SYSTEM_PROMPT;
use axum::Router;
use delivery::coordination::{Coordination, LocalInbox, QueueLimits, RedisCoordinator};
use plumbing::config::{ConfigError, Problem};
use plumbing::process::Service;
use plumbing::ratelimit::RateLimitedWarn;
use plumbing::telemetry::Metrics;
use proactive::book::{LocalBook, OfferBook, RedisBook};
use proactive::feed::{FileFeed, FiringFeed, RedisFeed};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The webhook, built and bound, not yet serving.
pub struct App {
    listener: TcpListener,
    /// Where `listener` is bound (the real port when `BIND_ADDR` asked for port 0).
    addr: SocketAddr,
    metrics_listener: Option<TcpListener>,
    state: Arc<AppState>,
    /// `/mcp`, when MCP_SIGNING_SECRET or MCP_API_KEY is set.
    mcp_routes: Option<Router>,
    replies: Replies,
    offers: Option<(Arc<Offers>, FiringFeed)>,
    offer_book: Option<Arc<OfferBook>>,
    outcomes: Arc<Outcomes>,
    connections: ConnectionLimits,
    shutdown_grace: Duration,
}

/// What the `webhook` binary runs ([`plumbing::process::main`]); the in-process tests and
/// the demo start it the same way.
impl Service for App {
    type Cli = Cli;
    type Settings = Settings;
    type Error = anyhow::Error;

    fn settings(cli: Cli) -> Result<Settings, ConfigError> {
        cli.into_settings()
    }

    fn check_only(cli: &Cli) -> bool {
        cli.check
    }

    fn command(cli: &Cli) -> Option<std::pin::Pin<Box<dyn Future<Output = i32> + '_>>> {
        match cli.command.as_ref()? {
            Command::Redact { text } => Some(Box::pin(async move { redact_command(&cli.redact, text) })),
            Command::Knowledge { action } => Some(Box::pin(async move {
                let crisp = cli.crisp_settings();
                crate::knowledge::command(&cli.knowledge, &cli.store.data_dir, crisp.as_ref(), &cli.openai, action)
                    .await
            })),
            Command::Report { since, json } => Some(Box::pin(async move { report_command(cli, since, *json).await })),
            Command::Simulate(args) => Some(Box::pin(crate::simulate::command(cli, args))),
        }
    }

    /// `--check`: the LLM, Crisp and Redis, one line each. Returns whether all work.
    async fn check(settings: &Settings) -> bool {
        let mut checks = vec![llm::probe(&settings.llm).await, crisp::probe(&settings.crisp).await];
        checks.extend(activity::config::probe_redis(&settings.store).await);
        plumbing::checks::report(&checks)
    }

    /// Opens and binds everything the settings name; each failure names its setting.
    async fn build(mut settings: Settings) -> Result<App, ConfigError> {
        // This webhook's own registry (no global recorder): handed to everything that counts,
        // rendered by its `/metrics`. Every documented series is listed from the first scrape.
        let metrics = Metrics::new();
        crate::series::register_series(&metrics);
        crate::knowledge::register_series(&metrics);
        outcomes::register_series(&metrics);
        settings.crisp = settings.crisp.with_metrics(metrics.clone());
        settings.llm = settings.llm.with_metrics(metrics.clone());
        let listener = TcpListener::bind(settings.bind_addr).await.map_err(|e| {
            ConfigError::invalid("BIND_ADDR", Problem::unusable(format!("cannot listen on {}", settings.bind_addr), e))
        })?;
        let metrics_listener = match settings.metrics_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                ConfigError::invalid("METRICS_ADDR", Problem::unusable(format!("cannot listen on {addr}"), e))
            })?),
            None => None,
        };
        let bound = listener
            .local_addr()
            .map_err(|e| ConfigError::invalid("BIND_ADDR", Problem::unusable("cannot tell the bound address", e)))?;
        let replica = replica_name(&bound);
        let system_prompt = match &settings.system_prompt_path {
            None => DEFAULT_SYSTEM_PROMPT.to_owned(),
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                ConfigError::invalid(
                    "SYSTEM_PROMPT_PATH",
                    Problem::unusable(format!("cannot read {}", path.display()), e),
                )
            })?,
        };
        let traces = match &settings.trace_dir {
            Some(dir) => Some(TraceWriter::open(dir.clone(), settings.trace_max_files).map_err(|e| {
                ConfigError::invalid("TRACE_DIR", Problem::unusable(format!("cannot use {}", dir.display()), e))
            })?),
            None => None,
        };
        let redis = settings.store.connect_redis()?;
        let knowledge = match settings.knowledge.clone() {
            Some(sources) => {
                let base = KnowledgeBase::open(sources, settings.crisp.settings(), &settings.openai, metrics.clone())?;
                base.start().await;
                Some(base)
            }
            None => {
                // SIGHUP (`systemctl reload`) reloads the help center; without one it must not
                // end the process, as it would by default.
                tokio::spawn(async {
                    use tokio::signal::unix::{SignalKind, signal};
                    let Ok(mut hangup) = signal(SignalKind::hangup()) else { return };
                    while hangup.recv().await.is_some() {
                        tracing::info!("SIGHUP: no help center configured, nothing to reload");
                    }
                });
                None
            }
        };
        let store = match settings.context_scope {
            ContextScope::Session => Some(settings.store.open_reader(redis.clone())?),
            ContextScope::Shared => None,
        };
        // One source of visitor activity (and one cache of links) for the replies and `/mcp`.
        let context = ContextSource::new(
            settings.context_scope,
            settings.event_data_path.clone(),
            store.clone(),
            settings.crisp.clone(),
            settings.link_secret.clone(),
            settings.context_max_chars,
            settings.link_trust,
        );
        let mcp_guard = mcp::McpAuth::new(
            settings.mcp_signing_secret.clone(),
            settings.mcp_api_key.as_ref(),
            settings.website_id.clone(),
            settings.mcp_signature_window,
        )
        .map(|auth| mcp::McpGuard::new(auth, settings.connections.header_read_timeout, redis.clone(), metrics.clone()));
        let mcp_routes = mcp::router(
            mcp_guard,
            context.clone(),
            settings.store.limits.ttl,
            Arc::clone(&settings.redactor),
            knowledge.clone(),
            metrics.clone(),
        );
        // Every message accepted and not answered before the last stop is answered first.
        let data_dir = &settings.store.data_dir;
        let (journal, recorded) = delivery::inbox::Journal::open_with_metrics(data_dir, &metrics).map_err(|e| {
            let doing = format!("cannot open the inbox journal in {}", data_dir.display());
            ConfigError::invalid("DATA_DIR", Problem::unusable(doing, e))
        })?;
        if !recorded.is_empty() {
            tracing::info!(
                messages = recorded.len(),
                "accepted messages recorded before the last stop; answering them"
            );
        }
        let limits = QueueLimits {
            max_waiting: settings.inbox_max_messages,
            max_per_conversation: MAX_WAITING_PER_CONVERSATION,
        };
        let shared = redis.clone().map(|conn| {
            RedisCoordinator::new(conn, settings.timings.clone(), MAX_WAITING_PER_CONVERSATION, replica.clone())
        });
        let coordination =
            Arc::new(Coordination::new(LocalInbox::new(&settings.timings, limits, Some(journal), recorded), shared));
        let outcomes = Outcomes::new(
            settings.outcomes,
            outcomes::Store::open(&settings.store, redis.clone())?,
            settings.crisp.clone(),
            Arc::clone(&coordination),
            context.clone(),
            metrics.clone(),
        );
        // Proactive offers: their records, and the firings the listener records.
        let offer_book = settings.proactive.as_ref().map(|_| {
            let shared = redis.clone().map(|conn| RedisBook::new(conn, replica.clone()));
            Arc::new(OfferBook::new(LocalBook::open(Some(data_dir)), shared))
        });
        let offers = match (settings.proactive, &offer_book) {
            (Some(proactive), Some(book)) => {
                let feed = match redis.clone() {
                    Some(conn) => FiringFeed::Redis(RedisFeed::new(conn, replica.clone())),
                    None => FiringFeed::File(FileFeed::new(data_dir, Arc::clone(book))),
                };
                tracing::info!(triggers = ?proactive.triggers, "proactive offers on");
                let offers = Offers::new(OfferDeps {
                    settings: proactive,
                    book: Arc::clone(book),
                    coordination: Arc::clone(&coordination),
                    crisp: settings.crisp.clone(),
                    llm: settings.llm.clone(),
                    store: store.clone(),
                    context: context.clone(),
                    trust_stream_conversation_id: settings.link_trust.stream_conversation_id,
                    context_max_chars: settings.context_max_chars,
                    traces: traces.clone(),
                    outcomes: Arc::clone(&outcomes),
                    metrics: metrics.clone(),
                });
                Some((offers, feed))
            }
            _ => None,
        };
        // A reply's steps, each given only what it needs.
        let floor = Arc::new(FloorStep::new(Arc::clone(&coordination), metrics.clone()));
        let conversations = Conversations::new(settings.crisp.clone());
        let placeholders = match redis.clone() {
            Some(conn) => PlaceholderBook::Redis { conn },
            None => PlaceholderBook::files(&settings.store.data_dir),
        };
        let pipeline = Pipeline {
            floor: Arc::clone(&floor),
            context: ContextStep::new(
                context,
                conversations.clone(),
                settings.history_turns,
                offer_book.clone(),
                metrics.clone(),
            ),
            knowledge: KnowledgeStep::new(knowledge.clone()),
            redaction: RedactionStep::new(Arc::clone(&settings.redactor), placeholders, metrics.clone()),
            prompt: PromptStep::new(system_prompt, settings.prompt_limits, metrics.clone()),
            llm: LlmStep::new(settings.llm, settings.fallback_message),
            post: PostStep::new(
                settings.crisp.clone(),
                Arc::clone(&coordination),
                Arc::clone(&floor),
                conversations.clone(),
            ),
            handoff: HandOffStep::new(settings.handoff, settings.crisp, floor, offer_book.clone(), metrics.clone()),
            outcome: OutcomeStep::new(Arc::clone(&outcomes), conversations),
            trace: TraceStep::new(traces),
            mark_done: MarkDoneStep::new(Arc::clone(&coordination), metrics.clone()),
            max_age: settings.reply_max_age,
            slots: Semaphore::new(settings.max_concurrent_replies.max(1)),
            metrics: metrics.clone(),
        };
        let replies = Replies::new(coordination, pipeline);
        let state = Arc::new(AppState {
            metrics,
            hook_key: settings.hook_key,
            website_id: settings.website_id,
            hook_signing_secret: settings.crisp_hook_secret,
            hook_max_age: settings.hook_max_age,
            replies: replies.clone(),
            refusals: Mutex::new(RateLimitedWarn::new(5)),
        });
        let connections = ConnectionLimits {
            max_connections: server::effective_max_connections(settings.connections.max_connections),
            ..settings.connections
        };
        Ok(App {
            listener,
            addr: bound,
            metrics_listener,
            state,
            mcp_routes,
            replies,
            offers,
            offer_book,
            outcomes,
            connections,
            shutdown_grace: settings.shutdown_grace,
        })
    }

    /// Serves until `shutdown` resolves, then lets accepted replies finish within the grace
    /// period.
    async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let app = self.router();
        let App {
            listener,
            addr,
            metrics_listener,
            state,
            replies,
            offers,
            offer_book,
            outcomes,
            connections,
            shutdown_grace,
            ..
        } = self;
        let (stopping, _) = tokio::sync::watch::channel(false);
        if let Some(metrics_listener) = metrics_listener {
            tracing::info!(addr = %metrics_listener.local_addr()?, "metrics at /metrics");
            let mut stop = stopping.subscribe();
            tokio::spawn(server::serve(
                metrics_listener,
                metrics_router(Arc::clone(&state)),
                connections,
                state.metrics.clone(),
                async move {
                    let _ = stop.changed().await;
                },
            ));
        }
        let offers = offers.map(|(offers, feed)| offers.run(feed));
        let saver = offer_book.as_ref().map(|book| book.save_in_background());
        let sweeper = outcomes.run();
        let resuming = replies.resume_recorded();
        tracing::info!(%addr, max_connections = connections.max_connections, "webhook listening");
        server::serve(listener, app, connections, state.metrics.clone(), shutdown).await?;
        let _ = stopping.send(true);
        tracing::info!("no longer accepting hooks; finishing replies in flight");
        resuming.abort();
        for task in offers.into_iter().chain(saver).chain([sweeper]) {
            task.abort();
        }
        if let Some(book) = &offer_book {
            book.save_now().await;
        }
        let left = replies.drain(shutdown_grace).await;
        if left > 0 {
            tracing::warn!(
                left,
                grace = ?shutdown_grace,
                "accepted messages not answered within the grace period stay recorded; they are answered after the restart"
            );
        }
        tracing::info!("webhook stopped");
        Ok(())
    }
}

impl App {
    /// The address hooks are served on (the real port when `BIND_ADDR` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// This webhook's metrics (what its `/metrics` renders).
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// The address of `/metrics` when `METRICS_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The public routes (hooks, health, `/mcp`; `/metrics` unless it has its own address).
    pub fn router(&self) -> Router {
        mcp::with_routes(router(Arc::clone(&self.state), self.metrics_listener.is_none()), self.mcp_routes.clone())
    }
}

/// This replica's name on the conversations it holds in Redis: the same after a restart (so it
/// resumes its own conversations at once), different for each replica (host and bound port).
fn replica_name(bound: &SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    format!("{host}/{bound}")
}

/// `webhook redact "text"`: the text as the LLM would see it, then what was found, by kind.
fn redact_command(args: &plumbing::config::RedactArgs, text: &str) -> i32 {
    let redactor = match args.redactor() {
        Ok(redactor) => redactor,
        Err(e) => {
            eprintln!("error: {e}");
            return plumbing::process::EXIT_CONFIG;
        }
    };
    let redacted = redactor.redact_counted(text, &mut privacy::Placeholders::new());
    println!("{}", redacted.text);
    let found: Vec<String> =
        redacted.counts.iter().filter(|(_, n)| *n > 0).map(|(kind, n)| format!("{}={n}", kind.label())).collect();
    eprintln!("redacted: {}", if found.is_empty() { "nothing".to_owned() } else { found.join(" ") });
    0
}

/// `webhook report`: reads only the store settings (no Crisp credentials needed).
async fn report_command(cli: &Cli, since: &str, json: bool) -> i32 {
    let settings = cli.store.settings().and_then(|store| Ok((store, cli.outcome.settings()?)));
    let (store, settings) = match settings {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e}");
            return plumbing::process::EXIT_CONFIG;
        }
    };
    let since = match outcomes::parse_since(since, proactive::now_secs()) {
        Ok(since) => since,
        Err(e) => {
            eprintln!("error: --since {e}");
            return plumbing::process::EXIT_CONFIG;
        }
    };
    match outcomes::report(&store, &settings, since, json).await {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
