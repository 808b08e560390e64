//! Feeds the per-visitor context store from the stream, off the reading path: a queue bounded
//! in bytes and one writer task, so a slow store never stalls the stream (it loses store writes, counted
//! and logged, but never the activity file).

use crate::stream::RateLimitedWarn;
use activity::action::{ActionRecord, BatchRecord};
use activity::context::{StoreError, StoreWriter};
use crisp::id_for_log;
use plumbing::retry::Backoff;
use plumbing::telemetry::{Metrics, PROACTIVE_FIRINGS};
use proactive::Firing;
use proactive::triggers::Watch;
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Bytes waiting for the store before new writes are dropped: seconds of a busy site's
/// stream, and the bound on memory while the store is down.
const QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Bytes handed to the store in one call, at most (more calls when more is queued).
const CALL_BYTES: usize = 2 * 1024 * 1024;
/// How often expired sessions and links are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(300);

pub enum StoreWrite {
    /// The batches of one network read, already in the activity file (one message per read,
    /// not per batch, so the reading thread and the writer rarely wake each other).
    Batches(PackedBatches),
    Summary {
        session: String,
        summary: String,
    },
    /// Proactive trigger firings (few and small).
    Firings(Vec<Firing>),
}

impl StoreWrite {
    fn bytes(&self) -> usize {
        match self {
            StoreWrite::Batches(batches) => batches.bytes(),
            StoreWrite::Summary { session, summary } => session.len() + summary.len(),
            StoreWrite::Firings(firings) => firings.iter().map(firing_bytes).sum(),
        }
    }
}

fn firing_bytes(f: &Firing) -> usize {
    std::mem::size_of::<Firing>()
        + f.id.len()
        + f.session_id.len()
        + f.user_id.as_ref().map_or(0, String::len)
        + f.conversation_id.as_ref().map_or(0, String::len)
        + f.page.len()
        + f.detail.len()
}

/// What the context store needs of the `actions` batches of one network read, packed into one
/// buffer by the reading thread: a copy of a few strings there costs far less than parsing the
/// frames again here, and one buffer per read is three allocations, not two per batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PackedBatches {
    text: String,
    /// Where each string ends in `text`: per batch, the session, user and conversation ids
    /// (empty when absent), then the title, details, page, type and raw URL of each action.
    ends: Vec<usize>,
    /// Each action's index, start and end times, in order.
    numbers: Vec<ActionNumbers>,
    batches: Vec<BatchHead>,
}

/// Strings packed per action.
const ACTION_STRINGS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq)]
struct ActionNumbers {
    index: i64,
    timestamp_start: f64,
    timestamp_end: f64,
}

#[derive(Debug, Clone, PartialEq)]
struct BatchHead {
    /// Its first string in `ends`.
    first: usize,
    /// Its first action in `numbers`.
    first_action: usize,
    actions: usize,
    /// Which of the three ids are present.
    present: [bool; 3],
}

impl PackedBatches {
    /// Room for about as much as `like` held, so a stream of similar reads does not regrow.
    pub fn sized_like(like: &PackedBatches) -> Self {
        Self {
            text: String::with_capacity(like.text.len()),
            ends: Vec::with_capacity(like.ends.len()),
            numbers: Vec::with_capacity(like.numbers.len()),
            batches: Vec::with_capacity(like.batches.len()),
        }
    }

    pub fn push(&mut self, batch: &BatchRecord<'_>) {
        let ids = [&batch.session_id, &batch.user_id, &batch.conversation_id];
        self.batches.push(BatchHead {
            first: self.ends.len(),
            first_action: self.numbers.len(),
            actions: batch.actions.len(),
            present: ids.map(Option::is_some),
        });
        let strings = ids.iter().map(|id| id.as_deref().unwrap_or("")).chain(
            batch.actions.iter().flat_map(|a| [&*a.title, &*a.description, &*a.canonical_url, &*a.kind, &*a.raw_url]),
        );
        for s in strings {
            self.text.push_str(s);
            self.ends.push(self.text.len());
        }
        self.numbers.extend(batch.actions.iter().map(|a| ActionNumbers {
            index: a.index,
            timestamp_start: a.timestamp_start,
            timestamp_end: a.timestamp_end,
        }));
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The batches again, borrowing from the buffer: ids, and each action's title, details,
    /// page, type, raw URL, index and times (all a store keeps).
    pub fn unpack(&self) -> impl Iterator<Item = BatchRecord<'_>> {
        self.batches.iter().map(|head| {
            let string = |i: usize| {
                let start = if i == 0 { 0 } else { self.ends[i - 1] };
                Cow::Borrowed(&self.text[start..self.ends[i]])
            };
            let id = |n: usize| head.present[n].then(|| string(head.first + n));
            let actions: Vec<ActionRecord<'_>> = (0..head.actions)
                .map(|a| {
                    let at = head.first + 3 + ACTION_STRINGS * a;
                    let numbers = self.numbers[head.first_action + a];
                    ActionRecord {
                        title: string(at),
                        description: string(at + 1),
                        canonical_url: string(at + 2),
                        kind: string(at + 3),
                        raw_url: string(at + 4),
                        index: numbers.index,
                        timestamp_start: numbers.timestamp_start,
                        timestamp_end: numbers.timestamp_end,
                    }
                })
                .collect();
            BatchRecord { session_id: id(0), user_id: id(1), conversation_id: id(2), actions }
        })
    }

    fn bytes(&self) -> usize {
        self.text.len()
            + self.ends.len() * std::mem::size_of::<usize>()
            + self.numbers.len() * std::mem::size_of::<ActionNumbers>()
    }
}

#[derive(Clone)]
pub struct StoreFeed {
    tx: mpsc::UnboundedSender<StoreWrite>,
    /// Bytes in the channel; bounds it (the channel itself is unbounded).
    queued: Arc<AtomicUsize>,
    dropped_warn: Arc<std::sync::Mutex<RateLimitedWarn>>,
}

/// The trigger state of every session, shared by the store writer (which evaluates each
/// batch as it takes it from the queue) and a once-a-second task (pages left alone, idle
/// sessions). The lock is held for one piece of work or one tick: uncontended, it costs about
/// one atomic operation.
pub type SharedWatch = Arc<std::sync::Mutex<Watch>>;

pub struct WriterTask {
    handle: JoinHandle<()>,
    stop: CancellationToken,
}

impl StoreFeed {
    /// Starts the writer. With `triggers`, it evaluates proactive triggers on the batches it
    /// writes: off the stream-reading thread, so they never slow the activity file down, and
    /// in the order the batches were read.
    /// Firings are counted in `metrics` (`proactive_firings_total{trigger}`).
    pub fn start(store: StoreWriter, triggers: Option<SharedWatch>, metrics: Metrics) -> (StoreFeed, WriterTask) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let queue = Queue { rx, queued: Arc::clone(&queued) };
        let handle = tokio::spawn(write_until_stopped(store, queue, stop.clone(), triggers, metrics));
        (
            StoreFeed { tx, queued, dropped_warn: Arc::new(std::sync::Mutex::new(RateLimitedWarn::new(5))) },
            WriterTask { handle, stop },
        )
    }

    /// Queues a write; never waits.
    pub fn send(&self, write: StoreWrite) {
        let bytes = write.bytes();
        let room = self.queued.fetch_add(bytes, Ordering::AcqRel) + bytes <= QUEUE_BYTES;
        if room && self.tx.send(write).is_ok() {
            return;
        }
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
        let allowed = self.dropped_warn.lock().unwrap_or_else(std::sync::PoisonError::into_inner).allow(Instant::now());
        if let Some(suppressed) = allowed {
            tracing::warn!(
                dropped_since_last = suppressed,
                "context store is behind; a write was dropped (the activity file is unaffected)"
            );
        }
    }
}

impl WriterTask {
    /// Writes what is queued (up to `grace`), then stops.
    pub async fn finish(self, grace: Duration) {
        self.stop.cancel();
        let _ = tokio::time::timeout(grace, self.handle).await;
    }
}

/// The writer's end of the channel.
struct Queue {
    rx: mpsc::UnboundedReceiver<StoreWrite>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    fn taken(&self, write: &StoreWrite) -> usize {
        let bytes = write.bytes();
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
        bytes
    }
}

/// Writes gathered from the queue, in order: consecutive frames go to the store together.
enum Work {
    Batches(Vec<PackedBatches>),
    Summary { session: String, summary: String },
    Firings(Vec<Firing>),
}

/// `first` and what else is queued, up to [`CALL_BYTES`].
fn gather(first: StoreWrite, queue: &mut Queue) -> Vec<Work> {
    let mut work: Vec<Work> = Vec::new();
    let mut bytes = queue.taken(&first);
    let mut next = Some(first);
    while let Some(write) = next.take() {
        match (write, work.last_mut()) {
            (StoreWrite::Batches(more), Some(Work::Batches(batches))) => batches.push(more),
            (StoreWrite::Batches(batches), _) => work.push(Work::Batches(vec![batches])),
            (StoreWrite::Summary { session, summary }, _) => work.push(Work::Summary { session, summary }),
            (StoreWrite::Firings(more), Some(Work::Firings(firings))) => firings.extend(more),
            (StoreWrite::Firings(firings), _) => work.push(Work::Firings(firings)),
        }
        if bytes < CALL_BYTES {
            next = queue.rx.try_recv().ok();
            bytes += next.as_ref().map_or(0, |w| queue.taken(w));
        }
    }
    work
}

/// One piece of work, with the firings its batches set off; while the store is unreachable
/// (Redis down) each write waits and tries again, so queued writes catch up once it is back.
/// The queue in front is bounded, so memory is too.
async fn write_work(
    store: &StoreWriter,
    work: &Work,
    stop: &CancellationToken,
    triggers: Option<&TriggerEval>,
    metrics: &Metrics,
) -> Result<(), StoreError> {
    match work {
        Work::Batches(packed) => {
            let batches: Vec<BatchRecord<'_>> = packed.iter().flat_map(PackedBatches::unpack).collect();
            let firings = triggers.map(|t| t.evaluate(&batches)).unwrap_or_default();
            let written = with_patience(stop, |now| store.record_batches(&batches, now)).await;
            let fired = record_firings(store, &firings, stop, metrics).await;
            written.and(fired)
        }
        Work::Summary { session, summary } => {
            with_patience(stop, |now| store.record_summary(session, summary, now)).await
        }
        Work::Firings(firings) => record_firings(store, firings, stop, metrics).await,
    }
}

async fn record_firings(
    store: &StoreWriter,
    firings: &[Firing],
    stop: &CancellationToken,
    metrics: &Metrics,
) -> Result<(), StoreError> {
    if firings.is_empty() {
        return Ok(());
    }
    for firing in firings {
        metrics.counter_with(PROACTIVE_FIRINGS, &[("trigger", firing.trigger.as_str())]).increment(1);
        tracing::info!(
            trigger = firing.trigger.as_str(),
            session = id_for_log(&firing.session_id),
            firing = id_for_log(&firing.id),
            "proactive trigger fired"
        );
    }
    with_patience(stop, |now| store.record_firings(firings, now)).await
}

/// Calls `write` until it succeeds or fails for another reason than the store being
/// unreachable, or the writer is stopping.
async fn with_patience<'a, F>(
    stop: &CancellationToken,
    mut write: impl FnMut(SystemTime) -> F,
) -> Result<(), StoreError>
where
    F: std::future::Future<Output = Result<(), StoreError>> + 'a,
{
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        match write(SystemTime::now()).await {
            Err(StoreError::Unavailable(_)) if !stop.is_cancelled() => {
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = stop.cancelled() => {}
                }
            }
            other => return other,
        }
    }
}

/// Proactive triggers as the writer runs them.
struct TriggerEval {
    watch: SharedWatch,
    /// New sessions left unevaluated because the trigger state is full.
    untracked_warn: std::sync::Mutex<RateLimitedWarn>,
}

impl TriggerEval {
    /// The firings a piece of work's batches set off (they arrived just now).
    fn evaluate(&self, batches: &[BatchRecord<'_>]) -> Vec<Firing> {
        let (now, wall) = (tokio::time::Instant::now(), SystemTime::now());
        let mut firings = Vec::new();
        let mut watch = self.watch.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut untracked = false;
        for batch in batches {
            untracked |= !watch.observe(batch, now, wall, &mut firings);
        }
        if untracked
            && let Some(suppressed) =
                self.untracked_warn.lock().unwrap_or_else(std::sync::PoisonError::into_inner).allow(Instant::now())
        {
            tracing::warn!(
                sessions = watch.sessions(),
                untracked_total = watch.untracked_total(),
                suppressed_since_last = suppressed,
                "proactive triggers track as many sessions as they may; a new session is not evaluated"
            );
        }
        firings
    }
}

async fn write_until_stopped(
    store: StoreWriter,
    mut queue: Queue,
    stop: CancellationToken,
    triggers: Option<SharedWatch>,
    metrics: Metrics,
) {
    let triggers =
        triggers.map(|watch| TriggerEval { watch, untracked_warn: std::sync::Mutex::new(RateLimitedWarn::new(1)) });
    let mut errors = RateLimitedWarn::new(10);
    let mut next_sweep = Instant::now() + SWEEP_EVERY;
    loop {
        let first = if stop.is_cancelled() {
            match queue.rx.try_recv() {
                Ok(write) => write,
                Err(_) => return,
            }
        } else {
            tokio::select! {
                write = queue.rx.recv() => match write { Some(write) => write, None => return },
                _ = stop.cancelled() => continue,
            }
        };
        for work in gather(first, &mut queue) {
            if let Err(e) = write_work(&store, &work, &stop, triggers.as_ref(), &metrics).await
                && let Some(suppressed) = errors.allow(Instant::now())
            {
                tracing::error!(error = %e, suppressed_since_last = suppressed, "context store write failed");
            }
        }
        if Instant::now() >= next_sweep {
            next_sweep = Instant::now() + SWEEP_EVERY;
            match store.sweep_expired(SystemTime::now()).await {
                Ok(removed) if removed > 0 => tracing::debug!(removed, "expired context removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "context sweep failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn unpacking_gives_back_what_was_packed(
            batches in proptest::collection::vec((
                proptest::array::uniform3(proptest::option::of(".{0,12}")),
                proptest::collection::vec((proptest::array::uniform5(".{0,20}"), any::<i64>(), 0.0..2e9f64), 0..8),
            ), 0..5),
        ) {
          let mut packed = PackedBatches::default();
          let mut expected = Vec::new();
          for (ids, actions) in batches {
            let [session_id, user_id, conversation_id] = ids.map(|id| id.map(Cow::Owned));
            let batch = BatchRecord {
                session_id,
                user_id,
                conversation_id,
                actions: actions
                    .into_iter()
                    .map(|([t, d, u, k, r], index, at)| ActionRecord {
                        title: t.into(),
                        description: d.into(),
                        canonical_url: u.into(),
                        kind: k.into(),
                        raw_url: r.into(),
                        index,
                        timestamp_start: at,
                        timestamp_end: at + 0.5,
                    })
                    .collect(),
            };
            packed.push(&batch);
            expected.push(batch);
          }
          prop_assert_eq!(packed.unpack().collect::<Vec<_>>(), expected);
        }
    }
}
