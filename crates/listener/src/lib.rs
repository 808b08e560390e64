//! The listener: Autoplay stream -> `event_data.txt` (+ per-session LLM summaries).

pub mod config;
pub mod series;
pub mod store_feed;
pub mod stream;
pub mod summarizer;

use activity::action::BatchRecord;
use activity::activity_file::{ActivityFile, format_action_block};
use activity::context::StoreWriter;
use activity::payload::{StreamPayload, parse_payload};
use activity::sse::SseItem;
use activity::summary::SummaryJob;
use config::Settings;
use plumbing::config::{ConfigError, Problem};
use plumbing::process::Service;
use plumbing::telemetry::{self, Counter, Metrics};
use proactive::triggers::Watch;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use store_feed::{PackedBatches, SharedWatch, StoreFeed, StoreWrite};
use stream::{FrameSink, RateLimitedWarn, StreamClient};
use summarizer::Summarizer;
use tokio::sync::watch;

/// How long shutdown waits for summaries being written.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Turns stream frames into file writes and summary jobs.
pub struct Ingest {
    file: ActivityFile,
    summarizer: Option<Arc<Summarizer>>,
    store: StoreFeed,
    /// Action blocks of the current network read, written at [`FrameSink::flush`].
    block: Vec<u8>,
    /// Batches behind `block` (an empty one still creates the file).
    batches: usize,
    /// Summaries that came due with those batches, started once they are written.
    due_summaries: Vec<SummaryJob>,
    /// What the context store needs of those batches, handed over after the write.
    for_store: PackedBatches,
    skipped_warn: RateLimitedWarn,
    /// The activity file's write errors (a full disk): once a minute, with a count.
    write_warn: RateLimitedWarn,
    /// `actions_ingested_total`, `frames_skipped_total`, looked up once.
    actions_ingested: Counter,
    frames_skipped: Counter,
}

impl Ingest {
    pub fn new(file: ActivityFile, summarizer: Option<Arc<Summarizer>>, store: StoreFeed, metrics: &Metrics) -> Self {
        Self {
            file,
            summarizer,
            store,
            block: Vec::with_capacity(64 * 1024),
            batches: 0,
            due_summaries: Vec::new(),
            for_store: PackedBatches::default(),
            skipped_warn: RateLimitedWarn::new(20),
            write_warn: RateLimitedWarn::new(1),
            actions_ingested: metrics.counter(telemetry::ACTIONS_INGESTED),
            frames_skipped: metrics.counter(telemetry::FRAMES_SKIPPED),
        }
    }

    fn skip(&mut self, reason: &dyn std::fmt::Display, excerpt: &str) {
        self.frames_skipped.increment(1);
        if let Some(suppressed) = self.skipped_warn.allow(Instant::now()) {
            let excerpt: String = excerpt.chars().take(200).collect();
            tracing::warn!(%reason, %excerpt, suppressed_since_last = suppressed, "frame skipped");
        }
    }
}

impl FrameSink for Ingest {
    /// Writes the batches of one network read in one `write(2)`: whole batches only, so a
    /// reader never sees half of one, and one system call instead of one per batch. (All of
    /// them arrived at the same instant, so the reset check once before them is the same as
    /// once before each.)
    fn flush(&mut self) {
        if self.batches == 0 {
            return;
        }
        // A failed write leaves nothing of these batches in the file; the next read is
        // written as usual, so writing resumes by itself once there is room again.
        if let Err(e) = self.file.append_batch(&self.block)
            && let Some(suppressed) = self.write_warn.allow(Instant::now())
        {
            tracing::error!(
                error = %e,
                path = %self.file.path().display(),
                suppressed_since_last = suppressed,
                "cannot write the activity file; these batches are not in it"
            );
        }
        self.block.clear();
        self.batches = 0;
        // Only now, so a summary can never land in the file before the actions it covers.
        if let Some(summarizer) = &self.summarizer {
            for job in self.due_summaries.drain(..) {
                summarizer.start(job);
            }
        }
        if !self.for_store.is_empty() {
            let next = PackedBatches::sized_like(&self.for_store);
            self.store.send(StoreWrite::Batches(std::mem::replace(&mut self.for_store, next)));
        }
    }

    fn frame(&mut self, item: SseItem) {
        let event = match item {
            SseItem::Event(event) => event,
            SseItem::Skipped { reason, excerpt } => return self.skip(&reason, &excerpt),
        };
        if event.event == "heartbeat" || event.data.is_empty() {
            return;
        }
        // Borrows from the frame's text: nothing is copied on this, the stream-reading, thread.
        let parsed = match parse_payload(&event.data) {
            Ok(parsed) => parsed,
            Err(e) => return self.skip(&e, &event.data),
        };
        let batch = match parsed.payload {
            StreamPayload::Actions(batch) => batch,
            StreamPayload::Unknown(kind) => return tracing::debug!(%kind, "unknown payload type ignored"),
            StreamPayload::Summary | StreamPayload::UsertourTrigger => return,
        };
        if let Some(wire_count) = parsed.count_mismatch {
            tracing::warn!(
                wire_count,
                actions = batch.count,
                session = batch.session_key().unwrap_or("(anonymous)"),
                "count disagrees with actions; using the actions"
            );
        }
        tracing::debug!(session = batch.session_key().unwrap_or("(anonymous)"), actions = batch.count, "batch read");
        self.actions_ingested.increment(batch.actions.len() as u64);
        // The wire's batch becomes the product's record here, once (borrowing its strings).
        let record = BatchRecord::from_wire(&batch);
        format_action_block(&record.actions, &mut self.block);
        self.batches += 1;
        if let Some(summarizer) = &self.summarizer
            && !record.actions.is_empty()
            && let Some(job) = summarizer.record(record.session_key(), &record.actions)
        {
            self.due_summaries.push(job);
        }
        // Only a real session's activity goes to the per-visitor store.
        if record.session_key().is_some() && (!record.actions.is_empty() || record.conversation_id.is_some()) {
            self.for_store.push(&record);
        }
    }
}

/// Once a second: fires `dwell` for pages left alone and forgets idle sessions, whether or
/// not frames arrive.
async fn tick_triggers(watch: SharedWatch, store: StoreFeed) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut firings = Vec::new();
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        {
            let mut watch = watch.lock().unwrap_or_else(PoisonError::into_inner);
            watch.due(now, SystemTime::now(), &mut firings);
            watch.forget_idle(now);
        }
        if !firings.is_empty() {
            store.send(StoreWrite::Firings(std::mem::take(&mut firings)));
        }
    }
}

/// The listener, built from validated settings (the one place that opens the store, makes its
/// metrics registry and binds `/metrics`), not yet reading the stream: see its [`Service`]
/// implementation.
pub struct App {
    settings: Settings,
    store: StoreWriter,
    client: StreamClient,
    /// This listener's registry (no global recorder): what it counts, `METRICS_ADDR` serves.
    metrics: Metrics,
    /// `METRICS_ADDR`, bound.
    metrics_listener: Option<tokio::net::TcpListener>,
}

/// What the `listener` binary runs ([`plumbing::process::main`]); the in-process tests and
/// the demo start it the same way.
impl Service for App {
    type Cli = config::Cli;
    type Settings = Settings;
    type Error = anyhow::Error;

    fn settings(cli: config::Cli) -> Result<Settings, ConfigError> {
        cli.into_settings()
    }

    fn check_only(cli: &config::Cli) -> bool {
        cli.check
    }

    /// `--check`: the stream, the LLM and Redis, one line each. Returns whether all work.
    async fn check(settings: &Settings) -> bool {
        let client = match StreamClient::new(
            settings.stream_url.clone(),
            settings.token.clone(),
            settings.stream_idle_timeout,
        ) {
            Ok(client) => client,
            Err(e) => {
                println!("FAILED  stream: {e}");
                return false;
            }
        };
        let mut checks = vec![plumbing::checks::run("Autoplay stream", client.probe()).await];
        match &settings.summaries {
            Some(summaries) => checks.push(llm::probe(&summaries.llm).await),
            None => println!("skipped OpenAI: summaries are off"),
        }
        checks.extend(activity::config::probe_redis(&settings.store).await);
        plumbing::checks::report(&checks)
    }

    /// Opens the store and binds `/metrics` when asked; each failure names its setting.
    async fn build(mut settings: Settings) -> Result<App, ConfigError> {
        let metrics = Metrics::new();
        series::register_series(&metrics);
        let metrics_listener = match settings.metrics_addr {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                ConfigError::invalid("METRICS_ADDR", Problem::unusable(format!("cannot listen on {addr}"), e))
            })?),
            None => None,
        };
        if let Some(summaries) = &mut settings.summaries {
            summaries.llm = summaries.llm.clone().with_metrics(metrics.clone());
        }
        let store = settings.store.open_writer(settings.store.connect_redis()?)?;
        let client =
            StreamClient::new(settings.stream_url.clone(), settings.token.clone(), settings.stream_idle_timeout)
                .map_err(|e| ConfigError::invalid("STREAM_URL", Problem::refused(e)))?
                .with_metrics(metrics.clone());
        Ok(App { settings, store, client, metrics, metrics_listener })
    }

    /// Reads the stream until `shutdown` resolves; then finishes the write in progress.
    async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let App { settings, store, client, metrics, metrics_listener } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        if let Some(metrics_listener) = metrics_listener {
            tracing::info!(addr = %metrics_listener.local_addr()?, "metrics at /metrics");
            let mut stop = stop_rx.clone();
            tokio::spawn(telemetry::serve(metrics_listener, metrics.clone(), async move {
                let _ = stop.wait_for(|stop| *stop).await;
            }));
        }
        let file = ActivityFile::new(&settings.event_data_path, settings.session_reset);
        let watch = if settings.triggers.is_off() {
            None
        } else {
            let on: Vec<&str> = settings.triggers.enabled.iter().map(|t| t.as_str()).collect();
            tracing::info!(triggers = %on.join(","), "proactive triggers on");
            Some(Arc::new(Mutex::new(Watch::new(settings.triggers))))
        };
        let (store_feed, store_writer) = StoreFeed::start(store, watch.clone(), metrics.clone());
        let summarizer = settings.summaries.map(|s| {
            Summarizer::new(s.llm, s.threshold, s.redactor, file.clone(), store_feed.clone(), metrics.clone())
        });
        if let Some(summarizer) = &summarizer {
            tokio::spawn(Arc::clone(summarizer).sweep_forever());
        } else {
            tracing::info!("summaries are off (SUMMARY_THRESHOLD=0)");
        }
        let ticker = watch.clone().map(|watch| tokio::spawn(tick_triggers(watch, store_feed.clone())));
        let mut ingest = Ingest::new(file, summarizer.clone(), store_feed, &metrics);
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
        // The stream is read on a thread of its own with a single-threaded runtime: the HTTP
        // connection and the reader then take turns on one thread, instead of waking each other
        // across threads for every chunk, and the store writer and summaries never delay it.
        let reader = plumbing::process::spawn_thread("stream-reader", move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            // Every network read was written and handed on (`flush`) before `run` returns.
            runtime.block_on(client.run(&mut ingest, stop_rx));
            let _ = ended_tx.send(());
            Ok::<(), std::io::Error>(())
        })?;
        tracing::info!(file = %settings.event_data_path.display(), "Listening for live website clicks\u{2026} (Press Ctrl+C to stop)");
        tokio::select! {
            _ = ended_rx => {}
            () = shutdown => { let _ = stop_tx.send(true); }
        }
        match tokio::task::spawn_blocking(move || reader.join()).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(anyhow::anyhow!("cannot start the stream reader: {e}")),
            Ok(Err(_)) | Err(_) => return Err(anyhow::anyhow!("the stream reader stopped unexpectedly")),
        }
        if let Some(ticker) = ticker {
            ticker.abort();
        }
        if let Some(summarizer) = summarizer {
            summarizer.drain(SHUTDOWN_GRACE).await;
        }
        store_writer.finish(SHUTDOWN_GRACE).await;
        tracing::info!("listener stopped");
        Ok(())
    }
}

impl App {
    /// This listener's metrics (what `METRICS_ADDR` serves).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The address of `/metrics` when `METRICS_ADDR` is set (the real port when it asked for
    /// port 0).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }
}
