//! The webhook: Crisp visitor message -> background reply grounded in live activity.

pub mod config;
pub mod context;
pub mod mcp;
pub mod proactive;
pub mod replies;
pub mod routes;
pub mod server;
pub mod traces;

use agent_core::ExposeSecret;
use agent_core::auth::SecretDigest;
use agent_core::coordination::{Coordination, LocalInbox, QueueLimits};
use agent_core::proactive::book::{LocalBook, OfferBook, RedisBook};
use agent_core::proactive::feed::{FileFeed, FiringFeed, RedisFeed};
use agent_core::ratelimit::RateLimitedWarn;
use config::Settings;
use context::ContextSource;
use replies::{Replies, ReplyDeps};
use routes::{AppState, metrics_router, router};
use server::ConnectionLimits;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// `--check`: the LLM, Crisp and Redis, one line each. Returns whether all work.
pub async fn check(settings: &Settings) -> bool {
    let mut checks =
        vec![agent_core::checks::llm(&settings.llm).await, agent_core::checks::crisp(&settings.crisp).await];
    if let Some(redis) = &settings.redis {
        checks.push(agent_core::checks::redis(redis).await);
    }
    agent_core::checks::report(&checks)
}

/// Serves on `listener` until `shutdown` resolves, then lets accepted replies finish within
/// the grace period.
pub async fn run(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // One source of visitor activity (and one cache of links) for the replies and `/mcp`.
    let context = ContextSource::new(
        settings.context_scope,
        settings.event_data_path.clone(),
        settings.store.clone(),
        settings.crisp.clone(),
        settings.link_secret.clone(),
        settings.context_max_chars,
    );
    // `/mcp`, only when MCP_SIGNING_SECRET or MCP_API_KEY is set.
    let mcp_routes = mcp::router(
        mcp::McpAuth::new(
            settings.mcp_signing_secret.clone(),
            settings.mcp_api_key.as_ref(),
            settings.website_id.clone(),
        ),
        context.clone(),
    );
    // Every message accepted and not answered before the last stop is answered first.
    let (journal, recorded) = agent_core::inbox::Journal::open(&settings.data_dir)
        .map_err(|e| anyhow::anyhow!("DATA_DIR {}: cannot open the inbox journal: {e}", settings.data_dir.display()))?;
    if !recorded.is_empty() {
        tracing::info!(messages = recorded.len(), "accepted messages recorded before the last stop; answering them");
    }
    let limits = QueueLimits {
        max_waiting: settings.inbox_max_messages,
        max_per_conversation: config::MAX_WAITING_PER_CONVERSATION,
    };
    let coordination = Arc::new(Coordination::new(
        LocalInbox::new(&settings.timings, limits, Some(journal), recorded),
        settings.shared,
    ));
    // Proactive offers: their records, and the firings the listener records.
    let offer_book = settings.proactive.as_ref().map(|_| {
        let shared = settings.redis.clone().map(|conn| RedisBook::new(conn, settings.replica.clone()));
        Arc::new(OfferBook::new(LocalBook::open(Some(&settings.data_dir)), shared))
    });
    let offers = match (settings.proactive, &offer_book) {
        (Some(proactive), Some(book)) => {
            let feed = match settings.redis.clone() {
                Some(conn) => FiringFeed::Redis(RedisFeed::new(conn, settings.replica.clone())),
                None => FiringFeed::File(FileFeed::new(&settings.data_dir, Arc::clone(book))),
            };
            tracing::info!(triggers = ?proactive.triggers, "proactive offers on");
            let offers = proactive::Offers::new(proactive::OfferDeps {
                settings: proactive,
                book: Arc::clone(book),
                coordination: Arc::clone(&coordination),
                crisp: settings.crisp.clone(),
                llm: settings.llm.clone(),
                store: settings.store.clone(),
                context_max_chars: settings.context_max_chars,
                traces: settings.traces.clone(),
            });
            Some((offers.run(feed), book.save_in_background()))
        }
        _ => None,
    };
    let replies = Replies::new(
        ReplyDeps {
            llm: settings.llm,
            context,
            crisp: settings.crisp,
            system_prompt: settings.system_prompt,
            fallback_message: settings.fallback_message,
            coordination,
            proactive: offer_book.clone(),
            traces: settings.traces,
            history_turns: settings.history_turns,
            limits: settings.prompt_limits,
            max_age: settings.reply_max_age,
            handoff: settings.handoff,
        },
        settings.max_concurrent_replies,
    );
    let metrics =
        agent_core::telemetry::install_recorder().map_err(|e| tracing::warn!(error = %e, "metrics unavailable")).ok();
    agent_core::telemetry::register_webhook_series();
    let state = Arc::new(AppState {
        metrics,
        webhook_secret: SecretDigest::new(settings.webhook_secret.expose_secret().as_bytes()),
        website_id: settings.website_id,
        hook_signing_secret: settings.crisp_hook_secret,
        replies: replies.clone(),
        refusals: Mutex::new(RateLimitedWarn::new(5)),
    });
    let connections = ConnectionLimits {
        max_connections: server::effective_max_connections(settings.connections.max_connections),
        ..settings.connections
    };
    let (stopping, _) = tokio::sync::watch::channel(false);
    if let Some(addr) = settings.metrics_addr {
        let metrics_listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("METRICS_ADDR {addr}: cannot listen: {e}"))?;
        tracing::info!(%addr, "metrics at /metrics");
        let mut stop = stopping.subscribe();
        let app = metrics_router(Arc::clone(&state));
        tokio::spawn(server::serve(metrics_listener, app, connections, async move {
            let _ = stop.changed().await;
        }));
    }
    let resuming = replies.resume_recorded();
    tracing::info!(addr = %listener.local_addr()?, max_connections = connections.max_connections, "webhook listening");
    server::serve(
        listener,
        mcp::with_routes(router(Arc::clone(&state), settings.metrics_addr.is_none()), mcp_routes),
        connections,
        shutdown,
    )
    .await?;
    let _ = stopping.send(true);
    tracing::info!("no longer accepting hooks; finishing replies in flight");
    resuming.abort();
    if let Some((feed, saver)) = offers {
        feed.abort();
        saver.abort();
    }
    if let Some(book) = &offer_book {
        book.save_now().await;
    }
    let left = replies.drain(settings.shutdown_grace).await;
    if left > 0 {
        tracing::warn!(
            left,
            grace = ?settings.shutdown_grace,
            "accepted messages not answered within the grace period stay recorded; they are answered after the restart"
        );
    }
    tracing::info!("webhook stopped");
    Ok(())
}
