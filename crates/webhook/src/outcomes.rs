//! What became of the bot's answers, in the webhook: the `outcomes` crate's records kept in a
//! store (`DATA_DIR/outcomes.jsonl`, or Redis with `REDIS_URL`), the events that drive them
//! (visitor messages, answers, hand-offs, the visitor's activity, time) and their effects
//! (the Crisp segment, the metrics, the one follow-up), plus proactive offer learning.
//!
//! Per conversation, events are serialised (a lock per conversation, by hash); on Redis each
//! record is written with a compare-and-set, so two replicas applying the same event never both
//! get its effects. The record is stored before its effects are applied: a crash in between
//! loses an effect, never doubles one.

use crate::context::ContextSource;
use ::outcomes::metrics as names;
use ::outcomes::{
    ConversationOutcome, Effect, FileStore, OfferEvent, OfferStats, Outcome, OutcomeStore, Report,
    Settings as OutcomeSettings, Trouble, segments_to_write,
};
use activity::action::ActionRecord;
use activity::config::StoreSettings;
use crisp::{ConversationId, CrispClient, Fingerprint, Post, PostKind, id_for_log, message_fingerprint};
use delivery::coordination::{Coordination, OwnMark};
use plumbing::config::{ConfigError, Problem};
use plumbing::redis_conn::RedisConn;
use plumbing::telemetry::Metrics;
use proactive::{Trigger, now_secs};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// Per-conversation locks (conversations share them by hash).
const LOCKS: usize = 64;
/// Compare-and-set attempts before an event is given up (another replica keeps writing).
const CAS_ATTEMPTS: usize = 16;
/// Redis records are kept this long after their latest event.
const REDIS_TTL_SECS: u64 = 90 * 86_400;
/// The periodic pass runs at most this far apart.
const SWEEP_MAX: Duration = Duration::from_secs(5);

/// The outcome and offer-learning settings (`OUTCOME_*`, `OFFER_*`), checked by the crate's
/// own rules.
#[derive(clap::Args, Debug, Clone)]
pub struct OutcomeArgs {
    /// An action matching a step of the answer this soon after it confirms the answer.
    #[arg(long, env = "OUTCOME_CONFIRM_SECS", default_value = "600", value_name = "SECS")]
    pub outcome_confirm_secs: String,
    /// How long an answer is watched: assumed after it, stuck or reopened within it.
    #[arg(long, env = "OUTCOME_WINDOW_SECS", default_value = "86400", value_name = "SECS")]
    pub outcome_window_secs: String,
    /// A visitor message this soon after a proactive offer accepts it.
    #[arg(long, env = "OFFER_ACCEPT_SECS", default_value = "600", value_name = "SECS")]
    pub offer_accept_secs: String,
    /// Offers per trigger judged together (1 to 10000).
    #[arg(long, env = "OFFER_LEARN_WINDOW", default_value = "50", value_name = "N")]
    pub offer_learn_window: String,
    /// Acceptance (0 to 1) below which a trigger is paused for a day.
    #[arg(long, env = "OFFER_MIN_ACCEPT", default_value = "0.05", value_name = "FRACTION")]
    pub offer_min_accept: String,
    /// `off`: never pause a trigger (results are still counted).
    #[arg(long, env = "OFFER_LEARNING", default_value = "on", value_name = "on|off")]
    pub offer_learning: String,
}

impl OutcomeArgs {
    pub fn settings(&self) -> Result<OutcomeSettings, ConfigError> {
        OutcomeSettings::from_lookup(|name| {
            let value = match name {
                "OUTCOME_CONFIRM_SECS" => &self.outcome_confirm_secs,
                "OUTCOME_WINDOW_SECS" => &self.outcome_window_secs,
                "OFFER_ACCEPT_SECS" => &self.offer_accept_secs,
                "OFFER_LEARN_WINDOW" => &self.offer_learn_window,
                "OFFER_MIN_ACCEPT" => &self.offer_min_accept,
                "OFFER_LEARNING" => &self.offer_learning,
                _ => return None,
            };
            Some(value.clone())
        })
        .map_err(|e| ConfigError::invalid(e.variable, Problem::NotAccepted(format!("{:?}: {}", e.value, e.expected))))
    }
}

/// Where the records live.
pub enum Store {
    File(Arc<FileStore>),
    Redis(RedisOutcomes),
}

impl Store {
    /// Redis when `redis` is given, else `DATA_DIR/outcomes.jsonl`.
    pub fn open(store: &StoreSettings, redis: Option<RedisConn>) -> Result<Store, ConfigError> {
        if let Some(conn) = redis {
            return Ok(Store::Redis(RedisOutcomes::new(conn)));
        }
        let path = store.data_dir.join(::outcomes::store::FILE_NAME);
        let file = FileStore::open(&path).map_err(|e| {
            ConfigError::invalid(
                "DATA_DIR",
                Problem::unusable(format!("cannot open the outcome records {}", path.display()), e),
            )
        })?;
        Ok(Store::File(Arc::new(file)))
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<Option<ConversationOutcome>> {
        match self {
            Store::File(file) => Ok(file.get(id)?),
            Store::Redis(redis) => redis.get(&redis.conversation_key(id)).await,
        }
    }

    /// Records whose latest event is at or after `since`.
    pub async fn list_since(&self, since: f64) -> anyhow::Result<Vec<ConversationOutcome>> {
        match self {
            Store::File(file) => Ok(file.list_since(since)?),
            Store::Redis(redis) => redis.list_since(since).await,
        }
    }

    /// The offer statistics under `settings` (empty when none were stored).
    pub async fn offers(&self, settings: ::outcomes::OfferSettings) -> anyhow::Result<OfferStats> {
        let stored = match self {
            Store::File(file) => file.get_offers()?,
            Store::Redis(redis) => redis.get(&redis.offers_key()).await?,
        };
        Ok(stored.map_or_else(|| OfferStats::new(settings), |o| o.with_settings(settings)))
    }

    /// Applies `event` to the conversation's record (a new one when none) and stores it; the
    /// effects are returned only when this call's write is the one that stuck. The caller
    /// holds the conversation's lock.
    async fn update_conversation(
        &self,
        id: &str,
        settings: &OutcomeSettings,
        event: &(dyn Fn(&mut ConversationOutcome) -> Vec<Effect> + Send + Sync),
    ) -> anyhow::Result<(Vec<Effect>, u32)> {
        let apply = |stored: Option<ConversationOutcome>| {
            let mut record = stored.unwrap_or_else(|| ConversationOutcome::new(id, settings));
            let effects = event(&mut record);
            let answers = record.answers;
            (record, (effects, answers))
        };
        match self {
            Store::File(file) => {
                let stored = file.get(id)?;
                let (record, out) = apply(stored.clone());
                if stored.as_ref() != Some(&record) {
                    file.put(&record)?;
                }
                Ok(out)
            }
            Store::Redis(redis) => {
                redis.update(&redis.conversation_key(id), Some(id), apply, ConversationOutcome::last_event_at).await
            }
        }
    }

    async fn update_offers(
        &self,
        settings: ::outcomes::OfferSettings,
        event: &(dyn Fn(&mut OfferStats) -> Vec<OfferEvent> + Send + Sync),
    ) -> anyhow::Result<Vec<OfferEvent>> {
        let apply = |stored: Option<OfferStats>| {
            let mut stats = stored.map_or_else(|| OfferStats::new(settings), |o| o.with_settings(settings));
            let events = event(&mut stats);
            (stats, events)
        };
        match self {
            Store::File(file) => {
                let before = file.get_offers()?;
                let (stats, events) = apply(before.clone());
                if before.map(|b| b.with_settings(settings)).as_ref() != Some(&stats) {
                    file.put_offers(&stats)?;
                }
                Ok(events)
            }
            Store::Redis(redis) => redis.update(&redis.offers_key(), None, apply, |_| 0.0).await,
        }
    }
}

/// Outcome records on Redis: one JSON value per conversation (`…:outcomes:conv:<id>`), a
/// sorted set of conversations by latest event (`…:outcomes:index`) for listing, and the
/// offer statistics (`…:outcomes:offers`). Every write is a compare-and-set on the value read.
pub struct RedisOutcomes {
    conn: RedisConn,
    cas: redis::Script,
}

/// KEYS: the value, the index (optional). ARGV: the value read ('' for none), the new value,
/// its TTL, then for the index: score, member, and the score below which entries are dropped.
const CAS_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if current == false then current = '' end
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
if KEYS[2] then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[6])
end
return 1
";

impl RedisOutcomes {
    pub fn new(conn: RedisConn) -> Self {
        Self { conn, cas: redis::Script::new(CAS_SCRIPT) }
    }

    fn conversation_key(&self, id: &str) -> String {
        self.conn.key(&["outcomes", "conv", id])
    }

    fn index_key(&self) -> String {
        self.conn.key(&["outcomes", "index"])
    }

    fn offers_key(&self) -> String {
        self.conn.key(&["outcomes", "offers"])
    }

    async fn get_raw(&self, key: &str) -> anyhow::Result<Option<String>> {
        let mut conn = self.conn.connection();
        let value: Option<String> = self.conn.observe(redis::cmd("GET").arg(key).query_async(&mut conn).await)?;
        Ok(value)
    }

    async fn get<T: DeserializeOwned>(&self, key: &str) -> anyhow::Result<Option<T>> {
        Ok(match self.get_raw(key).await? {
            Some(json) => Some(serde_json::from_str(&json)?),
            None => None,
        })
    }

    async fn list_since(&self, since: f64) -> anyhow::Result<Vec<ConversationOutcome>> {
        let mut conn = self.conn.connection();
        let ids: Vec<String> = self.conn.observe(
            redis::cmd("ZRANGEBYSCORE").arg(self.index_key()).arg(since).arg("+inf").query_async(&mut conn).await,
        )?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(record) = self.get::<ConversationOutcome>(&self.conversation_key(&id)).await? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Read, apply, compare-and-set; again when another writer came first.
    async fn update<V, R>(
        &self,
        key: &str,
        member: Option<&str>,
        apply: impl Fn(Option<V>) -> (V, R),
        score: impl Fn(&V) -> f64,
    ) -> anyhow::Result<R>
    where
        V: Serialize + DeserializeOwned,
    {
        for _ in 0..CAS_ATTEMPTS {
            let current = self.get_raw(key).await?;
            let stored = match &current {
                Some(json) => serde_json::from_str(json).ok(),
                None => None,
            };
            let (value, out) = apply(stored);
            let json = serde_json::to_string(&value)?;
            if current.as_deref() == Some(json.as_str()) {
                return Ok(out); // nothing changed (a replayed event)
            }
            let mut invocation = self.cas.key(key);
            if member.is_some() {
                invocation.key(self.index_key());
            }
            invocation.arg(current.unwrap_or_default()).arg(json).arg(REDIS_TTL_SECS);
            if let Some(member) = member {
                let at = score(&value);
                invocation.arg(at).arg(member).arg(now_secs() - REDIS_TTL_SECS as f64);
            }
            let mut conn = self.conn.connection();
            let written: i64 = self.conn.observe(invocation.invoke_async(&mut conn).await)?;
            if written == 1 {
                return Ok(out);
            }
        }
        anyhow::bail!("the outcome record kept changing under this replica")
    }
}

/// The derived fingerprint of the follow-up to a conversation's `answers`-th answer: the same
/// on every replica and after a restart, so it is posted at most once.
pub fn follow_up_fingerprint(session: &ConversationId, answers: u32) -> Fingerprint {
    message_fingerprint(&["followup", session.as_str(), &answers.to_string()])
}

/// A short yes ("yes", "yes please", "ok", "sure", "oui"…): after the follow-up, a request for
/// a person.
pub fn is_short_yes(text: &str) -> bool {
    const YES: &[&str] = &[
        "yes",
        "y",
        "yeah",
        "yep",
        "yup",
        "sure",
        "ok",
        "okay",
        "please",
        "pls",
        "plz",
        "oui",
        "ja",
        "si",
        "sí",
        "yes!",
        "of",
        "course",
        "definitely",
        "absolutely",
        "go",
        "ahead",
        "thanks",
        "thank",
        "you",
        "a",
        "person",
        "human",
        "get",
        "one",
        "that",
        "would",
        "be",
        "great",
        "d'accord",
        "claro",
        "bitte",
    ];
    let lower = text.trim().to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '!'))
        .map(|w| w.trim_matches('!'))
        .filter(|w| !w.is_empty())
        .collect();
    let first_is_yes = words.first().is_some_and(|w| {
        matches!(
            *w,
            "yes" | "y" | "yeah" | "yep" | "yup" | "sure" | "ok" | "okay" | "please" | "oui" | "ja" | "si" | "sí"
        )
    });
    first_is_yes && words.len() <= 6 && words.iter().all(|w| YES.contains(w))
}

/// The webhook's side of outcomes.
pub struct Outcomes {
    settings: OutcomeSettings,
    store: Store,
    crisp: CrispClient,
    coordination: Arc<Coordination>,
    context: ContextSource,
    locks: Box<[tokio::sync::Mutex<()>]>,
    offers_lock: tokio::sync::Mutex<()>,
    /// The webhook's registry.
    metrics: Metrics,
}

impl Outcomes {
    pub fn new(
        settings: OutcomeSettings,
        store: Store,
        crisp: CrispClient,
        coordination: Arc<Coordination>,
        context: ContextSource,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            settings,
            store,
            crisp,
            coordination,
            context,
            metrics,
            locks: (0..LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
            offers_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn settings(&self) -> &OutcomeSettings {
        &self.settings
    }

    fn lock(&self, session: &ConversationId) -> &tokio::sync::Mutex<()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(session);
        &self.locks[(hash % LOCKS as u64) as usize]
    }

    /// Applies an event to a conversation (under its lock), stores it, then applies the
    /// effects in the background. Failures are logged: outcomes never hold a reply up.
    async fn event(
        self: &Arc<Self>,
        session: &ConversationId,
        what: &'static str,
        event: impl Fn(&mut ConversationOutcome) -> Vec<Effect> + Send + Sync,
    ) {
        let result = {
            let _guard = self.lock(session).lock().await;
            self.store.update_conversation(session.as_str(), &self.settings, &event).await
        };
        match result {
            Ok((effects, answers)) if !effects.is_empty() => {
                let this = Arc::clone(self);
                let session = session.clone();
                tokio::spawn(async move { this.apply(&session, answers, effects).await });
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(session = id_for_log(session.as_str()), event = what, error = %e, "cannot record the outcome event")
            }
        }
    }

    async fn offers_event(&self, what: &'static str, event: impl Fn(&mut OfferStats) -> Vec<OfferEvent> + Send + Sync) {
        let result = {
            let _guard = self.offers_lock.lock().await;
            self.store.update_offers(self.settings.offers, &event).await
        };
        match result {
            Ok(events) => events.into_iter().for_each(|event| apply_offer_event(&self.metrics, event)),
            Err(e) => tracing::warn!(event = what, error = %e, "cannot record the offer event"),
        }
    }

    /// A visitor message was accepted.
    pub async fn visitor_wrote(self: &Arc<Self>, session: &ConversationId, at: f64, text: &str) {
        self.event(session, "visitor_wrote", |c| c.visitor_wrote(at, text)).await;
        self.offers_event("visitor_wrote", |o| o.visitor_wrote(session.as_str(), at)).await;
    }

    /// The bot's answer was posted (not the fallback).
    pub async fn answered(
        self: &Arc<Self>,
        session: &ConversationId,
        at: f64,
        text: &str,
        actions: &[ActionRecord<'_>],
        trouble: Trouble,
    ) {
        self.event(session, "answered", |c| c.answered(at, text, actions, trouble.clone())).await;
    }

    /// The conversation went to a human (`asked`, `unable`, `failed`, `operator`).
    pub async fn handed_off(self: &Arc<Self>, session: &ConversationId, at: f64, reason: &str) {
        self.event(session, "handed_off", |c| c.handed_off(at, reason)).await;
    }

    /// A proactive trigger fired for the visitor of `session`.
    pub async fn trigger_fired(self: &Arc<Self>, session: &ConversationId, at: f64, trigger: Trigger) {
        self.event(session, "trigger_fired", |c| c.trigger_fired(at, trigger)).await;
    }

    /// The follow-up's fingerprint when the current answer's follow-up was sent.
    pub async fn follow_up_sent(&self, session: &ConversationId) -> Option<Fingerprint> {
        match self.store.get(session.as_str()).await {
            Ok(Some(record)) if record.follow_up_sent => Some(follow_up_fingerprint(session, record.answers)),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outcome record");
                None
            }
        }
    }

    /// Whether offer learning paused `trigger`.
    pub async fn offer_paused(&self, trigger: Trigger, now: f64) -> bool {
        match self.store.offers(self.settings.offers).await {
            Ok(offers) => offers.is_paused(trigger, now),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the offer statistics; the trigger is not paused");
                false
            }
        }
    }

    /// An offer for `trigger` was sent into `session`.
    pub async fn offered(&self, trigger: Trigger, session: &ConversationId, at: f64) {
        self.offers_event("offered", |o| o.offered(trigger, session.as_str(), at, at)).await;
    }

    /// Sets `proactive_trigger_paused` from the stored statistics (after a restart).
    pub async fn restore_gauges(&self) {
        if let Ok(offers) = self.store.offers(self.settings.offers).await {
            let now = now_secs();
            for trigger in Trigger::ALL {
                let paused = if offers.is_paused(trigger, now) { 1.0 } else { 0.0 };
                self.metrics.gauge_with(names::TRIGGER_PAUSED, &[(names::TRIGGER_LABEL, trigger.as_str())]).set(paused);
            }
        }
    }

    /// Every few seconds (sooner with short windows): the offers' results, then each
    /// unsettled answer's new activity and time.
    pub fn run(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        let every = Duration::from_secs_f64((self.settings.confirm_secs / 4.0).clamp(0.2, SWEEP_MAX.as_secs_f64()));
        tokio::spawn(async move {
            this.restore_gauges().await;
            loop {
                tokio::time::sleep(every).await;
                this.sweep(now_secs()).await;
            }
        })
    }

    /// One pass over the unsettled records.
    pub async fn sweep(self: &Arc<Self>, now: f64) {
        self.offers_event("settle", |o| o.settle(now)).await;
        let records = match self.store.list_since(now - 2.0 * self.settings.window_secs).await {
            Ok(records) => records,
            Err(e) => return tracing::warn!(error = %e, "cannot list the outcome records"),
        };
        for record in records.into_iter().filter(|r| !r.is_settled()) {
            // The store's key was a checked id when written; anything else is skipped.
            let Ok(session) = ConversationId::parse(record.conversation_id) else { continue };
            let actions = self.context.activity_for(&session).await.context.map(|c| c.actions).unwrap_or_default();
            self.event(&session, "activity", |c| {
                let mut effects = c.activity(now, &actions);
                effects.extend(c.tick(now));
                effects
            })
            .await;
        }
    }

    /// The effects of one event, in order.
    async fn apply(&self, session: &ConversationId, answers: u32, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::SetSegment(segment) => self.set_segment(session, segment).await,
                Effect::CountOutcome(outcome) => {
                    self.metrics
                        .counter_with(names::CONVERSATION_OUTCOMES, &[(names::OUTCOME_LABEL, outcome.label())])
                        .increment(1);
                    log_outcome(session, outcome);
                }
                Effect::SendFollowUp { text } => self.follow_up(session, answers, &text).await,
                Effect::ObserveFirstReply { secs } => self.metrics.histogram(names::FIRST_REPLY_SECONDS).record(secs),
            }
        }
    }

    /// Adds the outcome's segment to the conversation's, keeping every other one.
    async fn set_segment(&self, session: &ConversationId, segment: &str) {
        let existing = match self.crisp.segments(session).await {
            Ok(existing) => existing,
            Err(e) => {
                return tracing::warn!(session = id_for_log(session.as_str()), error = %e, "cannot read the conversation's segments");
            }
        };
        if let Some(segments) = segments_to_write(&existing, segment)
            && let Err(e) = self.crisp.set_segments(session, &segments).await
        {
            tracing::warn!(session = id_for_log(session.as_str()), segment, error = %e, "cannot set the outcome segment");
        }
    }

    /// The one "still stuck?" message: never over a human, never while a reply is pending.
    async fn follow_up(&self, session: &ConversationId, answers: u32, text: &str) {
        match self.coordination.floor(session).await {
            Ok(floor) if !floor.human && !floor.bot_busy => {}
            Ok(_) => {
                return tracing::info!(
                    session = id_for_log(session.as_str()),
                    "follow-up not sent: a human has the conversation, or a reply is pending"
                );
            }
            Err(e) => {
                return tracing::warn!(session = id_for_log(session.as_str()), error = %e, "follow-up not sent: cannot tell who has the floor");
            }
        }
        let fingerprint = follow_up_fingerprint(session, answers);
        self.coordination.remember_own(session, OwnMark::Text(text.to_owned())).await;
        self.coordination.remember_own(session, OwnMark::Fingerprint(fingerprint)).await;
        let post = Post { kind: PostKind::Reply, content: text, fingerprint };
        match self.crisp.post(session, &post).await {
            Ok(()) => {
                self.metrics.counter(names::FOLLOW_UPS).increment(1);
                tracing::info!(session = id_for_log(session.as_str()), "follow-up sent");
            }
            Err(e) => tracing::warn!(session = id_for_log(session.as_str()), error = %e, "Crisp refused the follow-up"),
        }
    }
}

fn log_outcome(session: &ConversationId, outcome: Outcome) {
    tracing::info!(session = id_for_log(session.as_str()), outcome = outcome.label(), "answer outcome decided");
}

/// An offer event's counter, gauge and log line.
fn apply_offer_event(metrics: &Metrics, event: OfferEvent) {
    match event {
        OfferEvent::Result { trigger, result } => {
            metrics
                .counter_with(
                    names::OFFER_RESULTS,
                    &[(names::TRIGGER_LABEL, trigger.as_str()), (names::RESULT_LABEL, result.label())],
                )
                .increment(1);
        }
        OfferEvent::Paused { trigger, until, reason } => {
            metrics.gauge_with(names::TRIGGER_PAUSED, &[(names::TRIGGER_LABEL, trigger.as_str())]).set(1.0);
            tracing::warn!(trigger = trigger.as_str(), until = until as u64, "{reason}");
        }
        OfferEvent::Resumed { trigger } => {
            metrics.gauge_with(names::TRIGGER_PAUSED, &[(names::TRIGGER_LABEL, trigger.as_str())]).set(0.0);
            tracing::info!(trigger = trigger.as_str(), "offer learning resumed the trigger");
        }
    }
}

/// Every outcome series at 0 (and the first-reply histogram), so dashboards and alerts see
/// them before the first event.
pub fn register_series(metrics: &Metrics) {
    for (name, labels) in names::series() {
        if name == names::TRIGGER_PAUSED {
            metrics.gauge_with(name, labels.as_slice()).set(0.0);
        } else {
            metrics.counter_with(name, labels.as_slice()).increment(0);
        }
    }
    let _ = metrics.histogram(names::FIRST_REPLY_SECONDS);
}

/// `webhook report`: reads the store named by the settings and prints the report.
pub async fn report(
    store: &StoreSettings,
    settings: &OutcomeSettings,
    since: f64,
    json: bool,
) -> anyhow::Result<String> {
    let redis = store.connect_redis().map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = match redis {
        Some(conn) => Store::Redis(RedisOutcomes::new(conn)),
        None => {
            let path = store.data_dir.join(::outcomes::store::FILE_NAME);
            if !path.exists() {
                anyhow::bail!("no outcome records at {} (DATA_DIR)", path.display());
            }
            Store::File(Arc::new(FileStore::open(&path)?))
        }
    };
    let records = store.list_since(since).await?;
    let offers = store.offers(settings.offers).await?;
    let report = Report::from(&records, &offers, since);
    Ok(if json { serde_json::to_string_pretty(&report)? } else { report.render_text() })
}

/// `--since`: `7d`, `24h`, `30m`, `90s`, `2w`, or a Unix time in seconds; returns Unix seconds.
pub fn parse_since(text: &str, now: f64) -> Result<f64, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len()));
    let value: f64 =
        number.trim().parse().map_err(|_| format!("{text:?}: expected e.g. 7d, 24h, 30m or a Unix time"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text:?}: expected a positive amount"));
    }
    let secs = match unit.trim() {
        "" if value > 1_000_000_000.0 => return Ok(value),
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        "w" => value * 7.0 * 86_400.0,
        other => return Err(format!("{text:?}: unknown unit {other:?} (s, m, h, d, w)")),
    };
    Ok(now - secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offer learning through the webhook's store: a full window of ignored offers pauses the
    /// trigger, and the pause survives a restart (the file is read back).
    #[tokio::test]
    async fn a_trigger_nobody_accepts_is_paused_and_stays_paused_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(::outcomes::store::FILE_NAME);
        let offers = ::outcomes::OfferSettings { window: 3, accept_secs: 1.0, ..Default::default() };
        let store = Store::File(Arc::new(FileStore::open(&path).unwrap()));
        for i in 0..3 {
            let at = 100.0 + f64::from(i);
            let conversation = format!("c{i}");
            store.update_offers(offers, &|o| o.offered(Trigger::Dwell, &conversation, at, at)).await.unwrap();
        }
        let events = store.update_offers(offers, &|o| o.settle(200.0)).await.unwrap();
        assert!(events.iter().any(|e| matches!(e, OfferEvent::Paused { trigger: Trigger::Dwell, .. })), "{events:?}");
        drop(store);
        let store = Store::File(Arc::new(FileStore::open(&path).unwrap()));
        let stats = store.offers(offers).await.unwrap();
        assert!(stats.is_paused(Trigger::Dwell, 201.0));
        assert!(!stats.is_paused(Trigger::PingPong, 201.0));
        let off = ::outcomes::OfferSettings { learning: false, ..offers };
        assert!(!store.offers(off).await.unwrap().is_paused(Trigger::Dwell, 201.0), "OFFER_LEARNING=off");
    }

    #[test]
    fn since() {
        assert_eq!(parse_since("7d", 1_000_000.0), Ok(1_000_000.0 - 7.0 * 86_400.0));
        assert_eq!(parse_since("90s", 100.0), Ok(10.0));
        assert_eq!(parse_since("1700000000", 0.0), Ok(1_700_000_000.0));
        assert!(parse_since("soon", 0.0).is_err());
        assert!(parse_since("3y", 0.0).is_err());
    }

    #[test]
    fn short_yes() {
        for yes in ["yes", "Yes please", "yes!", "ok", "sure, please", "oui", "yeah get a person"] {
            assert!(is_short_yes(yes), "{yes}");
        }
        for no in ["no", "yes but the export button is missing", "", "thanks", "what?"] {
            assert!(!is_short_yes(no), "{no}");
        }
    }

    #[test]
    fn settings_errors_name_the_variable() {
        let mut args = OutcomeArgs {
            outcome_confirm_secs: "600".into(),
            outcome_window_secs: "86400".into(),
            offer_accept_secs: "600".into(),
            offer_learn_window: "50".into(),
            offer_min_accept: "0.05".into(),
            offer_learning: "on".into(),
        };
        assert_eq!(args.settings().unwrap(), OutcomeSettings::default());
        args.offer_learning = "maybe".into();
        assert!(matches!(args.settings(), Err(ConfigError::Invalid { var: "OFFER_LEARNING", .. })));
    }
}
