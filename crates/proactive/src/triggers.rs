//! Stuck-visitor triggers, evaluated by the listener as each action arrives (and on a timer,
//! for a page left alone): pure logic, no I/O.
//!
//! Every session keeps a small, bounded state: at most [`MAX_WINDOW`] page visits (hashes and
//! times), a few counters, and the two page names a firing may need. Each action costs O(1)
//! amortised work: windows are kept with incremental counters, never rescanned.
//!
//! Time: an action's time is its `timestamp_start` (the visitor's clock) when set, else the
//! time it was received. "Now" for a session (a page left alone) is its last action's time
//! plus the time since that action was received, so a client clock that is off by hours does
//! not matter.

use super::{Firing, MAX_FIRING_TEXT, Trigger};
use activity::action::{ActionRecord, BatchRecord};
use regex::Regex;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Page visits kept per session, at most (the SDK's "at most 50 actions of context").
pub const MAX_WINDOW: usize = 50;
/// `repeat`: the same action this many times ...
pub const REPEAT_COUNT: usize = 3;
/// ... within this long.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10);
/// `dwell`: a run of more actions than this on one page is activity, not being stuck.
pub const DWELL_MAX_ACTIONS: usize = 5;
/// Sessions tracked at once, at most; beyond it new sessions are not evaluated.
pub const MAX_SESSIONS: usize = 100_000;
/// A session idle this much longer than what its triggers look back over is forgotten.
pub const IDLE_GRACE: Duration = Duration::from_secs(60);
/// Sessions [`Watch::forget_idle`] looks at per call.
const FORGET_BUDGET: usize = 1024;
/// Distinct recent actions `repeat` counts per session.
const REPEAT_KEYS: usize = 4;
/// `error_page` verdicts remembered (by page, raw URL and title); the cache starts afresh when
/// full. Pages repeat across visitors, and a regular expression costs far more than a lookup.
const ERROR_VERDICTS: usize = 4096;

/// What the listener evaluates (`PROACTIVE_*`).
#[derive(Debug, Clone)]
pub struct TriggerSettings {
    /// The triggers on, in priority order: when one action matches several, the first wins.
    pub enabled: Vec<Trigger>,
    /// `ping_pong`: A→B→A triples needed.
    pub ping_pong_cycles: usize,
    /// `ping_pong`: page visits older than this (before the newest action) do not count.
    pub lookback: Duration,
    /// `dwell`: time on one page with few actions.
    pub dwell: Duration,
    /// `error_page`: matched against the canonical URL, the raw URL and the title.
    pub error_pattern: Option<Regex>,
}

impl Default for TriggerSettings {
    fn default() -> Self {
        Self {
            enabled: Vec::new(),
            ping_pong_cycles: 2,
            lookback: Duration::from_secs(120),
            dwell: Duration::from_secs(60),
            error_pattern: None,
        }
    }
}

impl TriggerSettings {
    /// No trigger on: nothing is evaluated.
    pub fn is_off(&self) -> bool {
        self.enabled.is_empty()
    }

    /// How long a session stays tracked without actions.
    pub fn idle_after(&self) -> Duration {
        self.lookback.max(self.dwell) + IDLE_GRACE
    }
}

/// Text from the stream as a firing carries it: at most [`MAX_FIRING_TEXT`] characters, line
/// breaks and other control characters as spaces (it is data, and ends up in logs and prompts).
pub fn firing_text(s: &str) -> String {
    super::one_line(s, MAX_FIRING_TEXT)
}

fn clean_into(s: &str, out: &mut String) {
    super::push_one_line(s, MAX_FIRING_TEXT, out);
}

fn trigger_index(trigger: Trigger) -> usize {
    match trigger {
        Trigger::PingPong => 0,
        Trigger::Dwell => 1,
        Trigger::Repeat => 2,
        Trigger::ErrorPage => 3,
    }
}

fn unix_secs(wall: SystemTime) -> f64 {
    wall.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Unix seconds as whole milliseconds (the firing id's time).
fn millis(t: f64) -> i64 {
    (t * 1000.0).round() as i64
}

#[derive(Debug, Clone, Copy)]
struct Visit {
    page: u64,
    /// The session clock at its latest action.
    t: f64,
}

/// Page visits (consecutive actions on one page are one visit) within the lookback, and how
/// many A→B→A triples they hold.
#[derive(Debug, Default)]
struct PingPong {
    visits: VecDeque<Visit>,
    triples: usize,
}

impl PingPong {
    fn is_triple(&self, i: usize) -> bool {
        let v = &self.visits;
        v[i].page == v[i + 2].page && v[i].page != v[i + 1].page
    }

    /// A visit to a page other than the current one.
    fn visit(&mut self, page: u64, t: f64) {
        let n = self.visits.len();
        // The last visit is another page (visits change pages), so this closes A→B→A when
        // the one before it was this page.
        if n >= 2 && self.visits[n - 2].page == page {
            self.triples += 1;
        }
        self.visits.push_back(Visit { page, t });
    }

    /// Another action on the current page: its visit is that recent.
    fn stay(&mut self, t: f64) {
        if let Some(last) = self.visits.back_mut() {
            last.t = t;
        }
    }

    /// Drops visits from the front: beyond [`MAX_WINDOW`], or older than `oldest`.
    fn trim(&mut self, oldest: f64) {
        while self.visits.len() > MAX_WINDOW || self.visits.front().is_some_and(|v| v.t < oldest) {
            if self.visits.len() >= 3 && self.is_triple(0) {
                self.triples -= 1;
            }
            self.visits.pop_front();
        }
    }

    /// After a firing: the next one needs new back and forth.
    fn restart(&mut self) {
        let last = self.visits.pop_back();
        self.visits.clear();
        self.visits.extend(last);
        self.triples = 0;
    }

    fn span(&self) -> f64 {
        match (self.visits.front(), self.visits.back()) {
            (Some(first), Some(last)) => last.t - first.t,
            _ => 0.0,
        }
    }
}

/// The trailing run of actions on one page.
#[derive(Debug, Default)]
struct DwellRun {
    /// Session clock at its first action.
    start: f64,
    /// Its first action's own time, for the firing id.
    start_own: f64,
    actions: usize,
    fired: bool,
}

/// The last few times of one action (page, type and title).
#[derive(Debug, Default, Clone, Copy)]
struct RepeatSlot {
    key: u64,
    /// Session clock of its latest occurrences, oldest first; `len` of them are set.
    times: [f64; REPEAT_COUNT],
    len: usize,
    /// When it was last used (the session's action count), to replace the stalest.
    used: u64,
}

#[derive(Debug)]
struct Session {
    key: Box<str>,
    /// Unique among all sessions ever tracked (a slot is reused).
    uid: u64,
    user_id: Option<Box<str>>,
    conversation_id: Option<Box<str>>,
    /// Session clock: the newest action time seen (never goes back).
    clock: f64,
    /// When its latest action was received.
    last_seen: Instant,
    actions: u64,
    /// The current page (a non-empty canonical URL's hash) and which visit this is.
    page: Option<u64>,
    visit_no: u64,
    /// The current and previous pages as a firing shows them (kept when ping_pong or dwell is on).
    page_text: String,
    prev_text: String,
    ping: PingPong,
    dwell: DwellRun,
    /// A dwell check for this session is queued.
    dwell_queued: bool,
    repeat: [RepeatSlot; REPEAT_KEYS],
    /// The visit on which `error_page` fired.
    error_fired_on: Option<u64>,
}

/// A dwell check: when, and for which session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct DwellCheck {
    at: Instant,
    slot: u32,
    uid: u64,
}

/// Every tracked session's trigger state.
pub struct Watch {
    settings: TriggerSettings,
    on: [bool; 4],
    lookback: f64,
    dwell: f64,
    idle_after: Duration,
    /// Hashes pages and actions: fast, seeded per process (a collision only merges two pages
    /// or actions of one visitor's own session).
    hasher: foldhash::fast::RandomState,
    /// Sessions by id: SipHash (std), as the ids are the visitors' to choose.
    index: HashMap<Box<str>, u32>,
    slots: Vec<Option<Session>>,
    free: Vec<u32>,
    next_uid: u64,
    /// Dwell checks queued at the start of a run: each at its receive time plus the dwell,
    /// so in order (runs start in receive order); at most one per session.
    dwell_fifo: VecDeque<DwellCheck>,
    /// Dwell checks that came due early (the run changed, or the session clock lags) and
    /// were queued again: any order, so a heap; at most one per session.
    dwell_later: BinaryHeap<Reverse<DwellCheck>>,
    forget_cursor: usize,
    max_sessions: usize,
    untracked: u64,
    /// Whether a visit's first action (page, raw URL, title, hashed) matches the error pattern.
    error_verdicts: HashMap<u64, bool, foldhash::fast::RandomState>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("settings", &self.settings).field("sessions", &self.index.len()).finish()
    }
}

impl Watch {
    pub fn new(settings: TriggerSettings) -> Self {
        let mut on = [false; 4];
        for &trigger in &settings.enabled {
            on[trigger_index(trigger)] = true;
        }
        // Without a pattern nothing can match.
        on[trigger_index(Trigger::ErrorPage)] &= settings.error_pattern.is_some();
        Self {
            on,
            lookback: settings.lookback.as_secs_f64(),
            dwell: settings.dwell.as_secs_f64(),
            idle_after: settings.idle_after(),
            settings,
            hasher: foldhash::fast::RandomState::default(),
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            next_uid: 0,
            dwell_fifo: VecDeque::new(),
            dwell_later: BinaryHeap::new(),
            forget_cursor: 0,
            max_sessions: MAX_SESSIONS,
            untracked: 0,
            error_verdicts: HashMap::default(),
        }
    }

    fn is_on(&self, trigger: Trigger) -> bool {
        self.on[trigger_index(trigger)]
    }

    /// Sessions tracked now.
    pub fn sessions(&self) -> usize {
        self.index.len()
    }

    /// Batches of new sessions left unevaluated because [`MAX_SESSIONS`] were tracked.
    pub fn untracked_total(&self) -> u64 {
        self.untracked
    }

    /// Evaluates a batch's actions in order, pushing at most one firing per action into `out`
    /// (the first enabled trigger that matches wins). Anonymous batches are ignored. Returns
    /// `false` when the batch's session is new and not tracked because [`MAX_SESSIONS`] are.
    pub fn observe(&mut self, batch: &BatchRecord<'_>, now: Instant, wall: SystemTime, out: &mut Vec<Firing>) -> bool {
        if self.settings.is_off() || batch.actions.is_empty() {
            return true;
        }
        let Some(key) = batch.session_key() else { return true };
        let Some(slot) = self.slot_for(key, now) else {
            self.untracked += 1;
            return false;
        };
        let received = unix_secs(wall);
        let Some(session) = self.slots[slot as usize].as_mut() else { return true };
        update_id(&mut session.user_id, batch.user_id.as_deref());
        update_id(&mut session.conversation_id, batch.conversation_id.as_deref());
        for action in &batch.actions {
            self.action(slot, action, received, now, out);
        }
        true
    }

    /// The session's slot, tracking it if new and there is room.
    fn slot_for(&mut self, key: &str, now: Instant) -> Option<u32> {
        if let Some(&slot) = self.index.get(key) {
            return Some(slot);
        }
        if self.index.len() >= self.max_sessions {
            return None;
        }
        let session = Session {
            key: key.into(),
            uid: self.next_uid,
            user_id: None,
            conversation_id: None,
            clock: f64::MIN,
            last_seen: now,
            actions: 0,
            page: None,
            visit_no: 0,
            page_text: String::new(),
            prev_text: String::new(),
            ping: PingPong::default(),
            dwell: DwellRun::default(),
            dwell_queued: false,
            repeat: [RepeatSlot::default(); REPEAT_KEYS],
            error_fired_on: None,
        };
        self.next_uid += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(session);
                slot
            }
            None => {
                self.slots.push(Some(session));
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(key.into(), slot);
        Some(slot)
    }

    /// One action of the session in `slot`; `received`: the wall clock now, Unix seconds.
    fn action(&mut self, slot: u32, action: &ActionRecord<'_>, received: f64, now: Instant, out: &mut Vec<Firing>) {
        let on = self.on;
        let [ping_on, dwell_on, repeat_on, error_on] = on;
        let url = &*action.canonical_url;
        let page =
            (!url.is_empty() && (ping_on || dwell_on || error_on || repeat_on)).then(|| self.hasher.hash_one(url));
        // The page's hash stands for its URL: one pass over the URL per action, not two.
        let repeat_key = repeat_on.then(|| self.hasher.hash_one((page.unwrap_or(0), &*action.kind, &*action.title)));
        let (lookback, dwell_secs, cycles) = (self.lookback, self.dwell, self.settings.ping_pong_cycles.max(1));
        let new_visit = page.is_some() && self.slots[slot as usize].as_ref().is_some_and(|s| s.page != page);
        // `error_page` looks at the first action of each visit (the page load: its URL and
        // title), once per visit, through the verdict cache.
        let error_match = error_on && new_visit && self.looks_like_error(action);
        let Some(s) = self.slots[slot as usize].as_mut() else { return };

        // The action's own time (its id's), and the session clock, which never goes back.
        let own = if action.timestamp_start > 0.0 && action.timestamp_start.is_finite() {
            action.timestamp_start
        } else {
            received
        };
        let t = own.max(s.clock);
        s.clock = t;
        s.last_seen = now;
        s.actions += 1;

        // Page visits. Consecutive actions on one page are one visit: the clicks on a page
        // would otherwise break A→B→A into A→A→B→B→A. Actions without a page are left out.
        if let Some(page) = page
            && s.page != Some(page)
        {
            s.page = Some(page);
            s.visit_no += 1;
            if ping_on || dwell_on {
                std::mem::swap(&mut s.page_text, &mut s.prev_text);
                clean_into(url, &mut s.page_text);
            }
            if ping_on {
                s.ping.visit(page, t);
            }
            if dwell_on {
                s.dwell = DwellRun { start: t, start_own: own, actions: 1, fired: false };
                if !s.dwell_queued {
                    s.dwell_queued = true;
                    self.dwell_fifo.push_back(DwellCheck { at: now + self.settings.dwell, slot, uid: s.uid });
                }
            }
        } else if page.is_some() {
            s.ping.stay(t);
            s.dwell.actions = s.dwell.actions.saturating_add(1);
        }
        if ping_on {
            s.ping.trim(t - lookback);
        }

        // Which triggers match; each one that does is spent (the first names the firing), so
        // one signal makes one firing, not one now and more on the next actions.
        let mut fired: Option<Firing> = None;
        for &trigger in &self.settings.enabled {
            let matched = match trigger {
                Trigger::PingPong => ping_on && s.ping.triples >= cycles,
                Trigger::Dwell => {
                    let end = action_end(action, t);
                    dwell_on
                        && s.page.is_some()
                        && !s.dwell.fired
                        && s.dwell.actions <= DWELL_MAX_ACTIONS
                        && end - s.dwell.start >= dwell_secs
                }
                Trigger::Repeat => match repeat_key {
                    Some(key) => repeat_hit(s, key, t),
                    None => false,
                },
                Trigger::ErrorPage => error_match && s.error_fired_on != Some(s.visit_no),
            };
            if !matched {
                continue;
            }
            if fired.is_none() {
                fired = Some(describe(s, trigger, action, own, t, received));
            }
            match trigger {
                Trigger::PingPong => s.ping.restart(),
                Trigger::Dwell => s.dwell.fired = true,
                Trigger::Repeat => {} // cleared by repeat_hit
                Trigger::ErrorPage => s.error_fired_on = Some(s.visit_no),
            }
        }
        out.extend(fired);
    }

    /// Whether an action's page URL, raw URL or title matches the error pattern.
    fn looks_like_error(&mut self, action: &ActionRecord<'_>) -> bool {
        let Some(pattern) = &self.settings.error_pattern else { return false };
        let key = self.hasher.hash_one((&*action.canonical_url, &*action.raw_url, &*action.title));
        if let Some(&verdict) = self.error_verdicts.get(&key) {
            return verdict;
        }
        let verdict =
            [&*action.canonical_url, &*action.raw_url, &*action.title].iter().any(|text| pattern.is_match(text));
        if self.error_verdicts.len() >= ERROR_VERDICTS {
            self.error_verdicts.clear();
        }
        self.error_verdicts.insert(key, verdict);
        verdict
    }

    /// The dwell checks that came due: a page left alone for the dwell time fires now.
    pub fn due(&mut self, now: Instant, wall: SystemTime, out: &mut Vec<Firing>) {
        if !self.is_on(Trigger::Dwell) {
            return;
        }
        let wall = unix_secs(wall);
        while let Some(check) = self.dwell_fifo.front().copied().filter(|c| c.at <= now) {
            self.dwell_fifo.pop_front();
            self.check_dwell(check, now, wall, out);
        }
        while let Some(Reverse(check)) = self.dwell_later.peek().copied().filter(|Reverse(c)| c.at <= now) {
            self.dwell_later.pop();
            self.check_dwell(check, now, wall, out);
        }
    }

    fn check_dwell(&mut self, check: DwellCheck, now: Instant, wall: f64, out: &mut Vec<Firing>) {
        let dwell = self.dwell;
        let Some(s) = self.slots.get_mut(check.slot as usize).and_then(Option::as_mut).filter(|s| s.uid == check.uid)
        else {
            return; // the session was forgotten
        };
        s.dwell_queued = false;
        if s.page.is_none() || s.dwell.fired || s.dwell.actions > DWELL_MAX_ACTIONS {
            return; // the next run queues its own check
        }
        let session_now = s.clock + now.saturating_duration_since(s.last_seen).as_secs_f64();
        let span = session_now - s.dwell.start;
        if span >= dwell {
            s.dwell.fired = true;
            let detail = dwell_detail(&s.page_text, span, s.dwell.actions);
            let page = s.page_text.clone();
            out.push(firing(s, Trigger::Dwell, millis(s.dwell.start_own), (session_now, wall), page, &detail));
        } else {
            // This run started later than the check's, or the session clock lags: check again
            // when it is due by the session clock.
            let left = Duration::try_from_secs_f64((dwell - span).clamp(0.001, dwell.max(0.001)))
                .unwrap_or(Duration::from_millis(1));
            s.dwell_queued = true;
            self.dwell_later.push(Reverse(DwellCheck { at: now + left, ..check }));
        }
    }

    /// Forgets sessions idle longer than [`TriggerSettings::idle_after`]; looks at a bounded
    /// number of sessions per call (call it about once a second). Returns how many went.
    pub fn forget_idle(&mut self, now: Instant) -> usize {
        let mut forgotten = 0;
        for _ in 0..FORGET_BUDGET.min(self.slots.len()) {
            if self.forget_cursor >= self.slots.len() {
                self.forget_cursor = 0;
            }
            let slot = self.forget_cursor;
            self.forget_cursor += 1;
            let idle =
                self.slots[slot].as_ref().is_some_and(|s| now.saturating_duration_since(s.last_seen) > self.idle_after);
            if idle && let Some(session) = self.slots[slot].take() {
                self.index.remove(&session.key);
                self.free.push(slot as u32);
                forgotten += 1;
            }
        }
        if self.index.is_empty() {
            // Nothing tracked: give the memory back, and the queued checks are all stale.
            self.slots = Vec::new();
            self.free = Vec::new();
            self.forget_cursor = 0;
            self.dwell_fifo = VecDeque::new();
            self.dwell_later = BinaryHeap::new();
        }
        forgotten
    }
}

fn update_id(kept: &mut Option<Box<str>>, seen: Option<&str>) {
    if let Some(seen) = seen.filter(|id| !id.is_empty())
        && kept.as_deref() != Some(seen)
    {
        *kept = Some(seen.into());
    }
}

/// Counts this occurrence of the action `key`; true (and its count restarts) when it is the
/// [`REPEAT_COUNT`]th within [`REPEAT_WINDOW`].
fn repeat_hit(s: &mut Session, key: u64, t: f64) -> bool {
    let used = s.actions;
    let slot = match s.repeat.iter().position(|r| r.len > 0 && r.key == key) {
        Some(i) => &mut s.repeat[i],
        None => {
            let stalest = s.repeat.iter_mut().min_by_key(|r| if r.len == 0 { 0 } else { r.used + 1 });
            let Some(slot) = stalest else { return false };
            *slot = RepeatSlot { key, ..RepeatSlot::default() };
            slot
        }
    };
    slot.used = used;
    if slot.len == REPEAT_COUNT {
        slot.times.copy_within(1.., 0);
        slot.len -= 1;
    }
    slot.times[slot.len] = t;
    slot.len += 1;
    let hit = slot.len == REPEAT_COUNT && t - slot.times[0] <= REPEAT_WINDOW.as_secs_f64();
    if hit {
        slot.len = 0;
    }
    hit
}

/// When an action ended on the session clock (`t`: when it started).
fn action_end(action: &ActionRecord<'_>, t: f64) -> f64 {
    if action.timestamp_end.is_finite() { t.max(action.timestamp_end) } else { t }
}

/// A dwell firing's detail: the page, how long, how few actions.
fn dwell_detail(page: &str, span: f64, actions: usize) -> String {
    format!("stayed on {page} for {span:.0} s with {actions} action{}", if actions == 1 { "" } else { "s" })
}

/// The firing for an action that matched `trigger` (before its state is spent).
fn describe(s: &Session, trigger: Trigger, action: &ActionRecord<'_>, own: f64, t: f64, wall: f64) -> Firing {
    let page = firing_text(&action.canonical_url);
    let (ms, detail) = match trigger {
        Trigger::PingPong => (
            millis(own),
            format!(
                "went back and forth between {} and {} {} times in {:.0} s",
                s.prev_text,
                s.page_text,
                s.ping.triples,
                s.ping.span()
            ),
        ),
        Trigger::Dwell => (
            millis(s.dwell.start_own),
            dwell_detail(&s.page_text, action_end(action, t) - s.dwell.start, s.dwell.actions),
        ),
        Trigger::Repeat => (
            millis(own),
            format!(
                "did the same {} \"{}\" {REPEAT_COUNT} times within {} s",
                if action.kind.is_empty() { "action" } else { &action.kind },
                firing_text(&action.title),
                REPEAT_WINDOW.as_secs()
            ),
        ),
        Trigger::ErrorPage => (
            millis(own),
            format!("reached a page that looks like an error: \"{}\" ({})", firing_text(&action.title), page),
        ),
    };
    firing(s, trigger, ms, (t, wall), page, &detail)
}

/// `at`: the session clock and the wall clock (Unix seconds) when it fired.
fn firing(s: &Session, trigger: Trigger, ms: i64, at: (f64, f64), page: String, detail: &str) -> Firing {
    Firing {
        id: format!("{}:{}:{ms}", s.key, trigger.as_str()),
        trigger,
        session_id: s.key.to_string(),
        user_id: s.user_id.as_deref().map(str::to_owned),
        conversation_id: s.conversation_id.as_deref().map(str::to_owned),
        at: at.0,
        page,
        detail: firing_text(detail),
        recorded_at: at.1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: f64 = 1_700_000_000.0;

    fn all_on() -> TriggerSettings {
        TriggerSettings {
            enabled: Trigger::ALL.to_vec(),
            error_pattern: Some(Regex::new(r"(?i)error|404").unwrap()),
            ..TriggerSettings::default()
        }
    }

    fn only(trigger: Trigger) -> TriggerSettings {
        TriggerSettings { enabled: vec![trigger], ..all_on() }
    }

    fn act(url: &str, t: f64) -> ActionRecord<'static> {
        ActionRecord {
            title: format!("Page {url}").into(),
            kind: "pageview".into(),
            canonical_url: url.to_owned().into(),
            timestamp_start: t,
            timestamp_end: t + 0.5,
            ..ActionRecord::default()
        }
    }

    fn batch(session: &str, actions: Vec<ActionRecord<'static>>) -> BatchRecord<'static> {
        BatchRecord {
            session_id: Some(session.to_owned().into()),
            user_id: Some("u1".into()),
            conversation_id: Some("session_c1".into()),
            actions,
        }
    }

    /// Feeds actions one batch each, returning the firings.
    fn feed(watch: &mut Watch, session: &str, actions: &[ActionRecord<'static>]) -> Vec<Firing> {
        let mut out = Vec::new();
        for a in actions {
            watch.observe(&batch(session, vec![a.clone()]), Instant::now(), SystemTime::now(), &mut out);
        }
        out
    }

    fn pages(urls: &[&str], t0: f64, step: f64) -> Vec<ActionRecord<'static>> {
        urls.iter().enumerate().map(|(i, u)| act(u, t0 + i as f64 * step)).collect()
    }

    fn session<'w>(watch: &'w Watch, key: &str) -> &'w Session {
        watch.slots[watch.index[key] as usize].as_ref().unwrap()
    }

    #[test]
    fn ping_pong_fires_at_the_second_cycle_once() {
        let mut w = Watch::new(only(Trigger::PingPong));
        // Clicks on a page are one visit: A A B B A does not break the pattern.
        let mut actions = pages(&["/a", "/a", "/b", "/b", "/a"], T0, 5.0);
        assert!(feed(&mut w, "s1", &actions).is_empty(), "one cycle is not enough");
        actions = pages(&["/b"], T0 + 25.0, 1.0);
        let fired = feed(&mut w, "s1", &actions);
        assert_eq!(fired.len(), 1);
        let f = &fired[0];
        assert_eq!(f.trigger, Trigger::PingPong);
        assert_eq!(f.session_id, "s1");
        assert_eq!(f.id, format!("s1:ping_pong:{}", millis(T0 + 25.0)));
        assert_eq!(f.page, "/b");
        assert_eq!(f.detail, "went back and forth between /a and /b 2 times in 20 s");
        assert_eq!((f.user_id.as_deref(), f.conversation_id.as_deref()), (Some("u1"), Some("session_c1")));
        assert_eq!(f.at, T0 + 25.0);
        // The window restarted: one more visit is not a new cycle.
        assert!(feed(&mut w, "s1", &pages(&["/a"], T0 + 30.0, 1.0)).is_empty());
        // Two new triples are: B A B (after /a) then A B A.
        assert!(feed(&mut w, "s1", &pages(&["/b"], T0 + 31.0, 1.0)).is_empty());
        assert_eq!(feed(&mut w, "s1", &pages(&["/a"], T0 + 32.0, 1.0)).len(), 1);
    }

    #[test]
    fn ping_pong_needs_cycles_within_the_lookback() {
        let mut w = Watch::new(TriggerSettings { lookback: Duration::from_secs(60), ..only(Trigger::PingPong) });
        // A B A at 0, 10, 20; then B at 100: the A of 0 and 10 are out of the lookback.
        let mut actions = pages(&["/a", "/b", "/a"], T0, 10.0);
        actions.push(act("/b", T0 + 100.0));
        assert!(feed(&mut w, "s1", &actions).is_empty());
        assert_eq!(session(&w, "s1").ping.triples, 0);
        // Inside the window it counts: B A B A.
        assert!(feed(&mut w, "s1", &pages(&["/a", "/b"], T0 + 101.0, 1.0)).is_empty());
        assert_eq!(feed(&mut w, "s1", &pages(&["/a"], T0 + 103.0, 1.0)).len(), 1);
        // Empty URLs are left out.
        let mut w = Watch::new(only(Trigger::PingPong));
        assert_eq!(feed(&mut w, "s2", &pages(&["/a", "", "/b", "", "/a", "/b"], T0, 1.0)).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn dwell_fires_on_arrival_once_per_run_and_not_with_six_actions() {
        let mut w = Watch::new(only(Trigger::Dwell));
        let fired = feed(&mut w, "s1", &[act("/a", T0), act("/a", T0 + 30.0), act("/a", T0 + 61.0)]);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].id, format!("s1:dwell:{}", millis(T0)));
        assert_eq!(fired[0].page, "/a");
        assert_eq!(fired[0].detail, "stayed on /a for 62 s with 3 actions");
        assert!(feed(&mut w, "s1", &[act("/a", T0 + 70.0)]).is_empty(), "once per run");
        // A new run may fire again.
        assert_eq!(feed(&mut w, "s1", &[act("/b", T0 + 80.0), act("/b", T0 + 150.0)]).len(), 1);
        // Six actions in the run: activity, not stuck.
        let busy: Vec<_> = [0.0, 10.0, 20.0, 30.0, 40.0, 70.0].map(|d| act("/c", T0 + 200.0 + d)).to_vec();
        assert!(feed(&mut w, "s1", &busy).is_empty());
        let mut out = Vec::new();
        tokio::time::advance(Duration::from_secs(120)).await;
        w.due(Instant::now(), SystemTime::now(), &mut out);
        assert!(out.is_empty());
        // Five spread over 60 s: fires at the fifth.
        let slow: Vec<_> = (0..5).map(|i| act("/d", T0 + 400.0 + i as f64 * 15.0)).collect();
        assert_eq!(feed(&mut w, "s1", &slow).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn dwell_fires_by_the_clock_for_a_page_left_alone() {
        let mut w = Watch::new(TriggerSettings { dwell: Duration::from_secs(60), ..only(Trigger::Dwell) });
        // The client clock is hours off: only the time since the action counts.
        assert!(feed(&mut w, "s1", &[act("/a", T0 - 7200.0)]).is_empty());
        let mut out = Vec::new();
        tokio::time::advance(Duration::from_secs(59)).await;
        w.due(Instant::now(), SystemTime::now(), &mut out);
        assert!(out.is_empty(), "not yet");
        tokio::time::advance(Duration::from_secs(1)).await;
        w.due(Instant::now(), SystemTime::now(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].id, format!("s1:dwell:{}", millis(T0 - 7200.0)));
        assert_eq!(out[0].detail, "stayed on /a for 60 s with 1 action");
        assert_eq!(out[0].at, T0 - 7200.0 + 60.0);
        tokio::time::advance(Duration::from_secs(600)).await;
        w.due(Instant::now(), SystemTime::now(), &mut out);
        assert_eq!(out.len(), 1, "once per run");
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_check_follows_the_current_run() {
        let mut w = Watch::new(only(Trigger::Dwell));
        let start = Instant::now();
        assert!(feed(&mut w, "s1", &[act("/a", T0)]).is_empty());
        tokio::time::advance(Duration::from_secs(30)).await;
        // Another page 30 s later: the first check (due at 60 s) finds this run at 30 s.
        assert!(feed(&mut w, "s1", &[act("/b", T0 + 30.0)]).is_empty());
        let mut out = Vec::new();
        tokio::time::advance(Duration::from_secs(30)).await;
        w.due(Instant::now(), SystemTime::now(), &mut out);
        assert!(out.is_empty());
        tokio::time::advance(Duration::from_secs(29)).await;
        w.due(Instant::now(), SystemTime::now(), &mut out);
        assert!(out.is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        w.due(Instant::now(), SystemTime::now(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].page, "/b");
        assert_eq!(Instant::now() - start, Duration::from_secs(90));
        assert!(w.dwell_fifo.is_empty() && w.dwell_later.is_empty());
    }

    #[test]
    fn repeat_fires_for_three_within_ten_seconds_then_starts_over() {
        let mut w = Watch::new(only(Trigger::Repeat));
        let click = |t: f64| ActionRecord { kind: "click".into(), title: "Save".into(), ..act("/form", t) };
        // Spread over 11 s: no.
        assert!(feed(&mut w, "s1", &[click(T0), click(T0 + 5.5), click(T0 + 11.0)]).is_empty());
        // Within 10 s (the last two and one more): yes, once.
        let fired = feed(&mut w, "s1", &[click(T0 + 15.0)]);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].id, format!("s1:repeat:{}", millis(T0 + 15.0)));
        assert_eq!(fired[0].detail, "did the same click \"Save\" 3 times within 10 s");
        assert!(feed(&mut w, "s1", &[click(T0 + 16.0), click(T0 + 17.0)]).is_empty(), "the count restarted");
        assert_eq!(feed(&mut w, "s1", &[click(T0 + 18.0)]).len(), 1);
        // Another action in between does not reset it; another title is another action.
        let other = ActionRecord { title: "Cancel".into(), ..click(T0 + 30.5) };
        assert!(feed(&mut w, "s2", &[click(T0 + 30.0), other.clone(), click(T0 + 31.0), other]).is_empty());
        assert_eq!(feed(&mut w, "s2", &[click(T0 + 32.0)]).len(), 1);
    }

    #[test]
    fn error_page_fires_once_per_visit() {
        let mut w = Watch::new(only(Trigger::ErrorPage));
        let error = |t: f64| ActionRecord { title: "Something went wrong: Error 500".into(), ..act("/checkout", t) };
        let fired = feed(&mut w, "s1", &[act("/cart", T0), error(T0 + 1.0), error(T0 + 2.0)]);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].page, "/checkout");
        assert_eq!(fired[0].id, format!("s1:error_page:{}", millis(T0 + 1.0)));
        assert_eq!(
            fired[0].detail,
            "reached a page that looks like an error: \"Something went wrong: Error 500\" (/checkout)"
        );
        // Leaving and coming back is another visit; the raw URL matches too.
        assert_eq!(feed(&mut w, "s1", &[act("/cart", T0 + 3.0), error(T0 + 4.0)]).len(), 1);
        let raw = ActionRecord { raw_url: "https://x.example/404?from=/y".into(), ..act("/y", T0 + 5.0) };
        assert_eq!(feed(&mut w, "s1", &[raw]).len(), 1);
        // A visit is judged by its first action (the page load): a later click titled "Error"
        // on a page that loaded fine is no error page.
        let click = ActionRecord { title: "Click Error details".into(), ..act("/settings", T0 + 7.0) };
        assert!(feed(&mut w, "s1", &[act("/settings", T0 + 6.0), click]).is_empty());
        // The verdict is cached per page, URL and title: the same page load matches again.
        assert_eq!(feed(&mut w, "s2", &[error(T0 + 8.0)]).len(), 1);
        // Without a pattern it never fires.
        let mut w = Watch::new(TriggerSettings { error_pattern: None, ..only(Trigger::ErrorPage) });
        assert!(feed(&mut w, "s1", &[error(T0)]).is_empty());
    }

    #[test]
    fn the_first_matching_trigger_wins_and_the_others_are_spent() {
        let error = |u: &str, t: f64| ActionRecord { title: "Error".into(), ..act(u, t) };
        // /a /b /a /b with error titles: ping_pong and error_page both match at the 4th.
        let actions = [error("/a", T0), error("/b", T0 + 1.0), error("/a", T0 + 2.0), error("/b", T0 + 3.0)];
        let mut w = Watch::new(TriggerSettings { enabled: vec![Trigger::PingPong, Trigger::ErrorPage], ..all_on() });
        let fired = feed(&mut w, "s1", &actions[..3]);
        assert_eq!(fired.iter().map(|f| f.trigger).collect::<Vec<_>>(), [Trigger::ErrorPage; 3]);
        let fired = feed(&mut w, "s1", &actions[3..]);
        assert_eq!(fired.iter().map(|f| f.trigger).collect::<Vec<_>>(), [Trigger::PingPong]);
        // The loser is spent: the same page again does not fire it.
        assert!(feed(&mut w, "s1", &[error("/b", T0 + 4.0)]).is_empty());
        let mut w = Watch::new(TriggerSettings { enabled: vec![Trigger::ErrorPage, Trigger::PingPong], ..all_on() });
        let fired = feed(&mut w, "s1", &actions);
        assert_eq!(fired.iter().map(|f| f.trigger).collect::<Vec<_>>(), [Trigger::ErrorPage; 4]);
        assert_eq!(session(&w, "s1").ping.triples, 0, "ping_pong was spent");
    }

    #[test]
    fn the_window_stays_bounded_over_a_long_session() {
        let mut w = Watch::new(TriggerSettings { lookback: Duration::from_secs(100_000), ..all_on() });
        let mut out = Vec::new();
        for i in 0..10_000 {
            let a = act(&format!("/p{}", i % 7), T0 + i as f64);
            w.observe(&batch("s1", vec![a]), Instant::now(), SystemTime::now(), &mut out);
            let s = session(&w, "s1");
            assert!(s.ping.visits.len() <= MAX_WINDOW);
        }
        assert_eq!(w.sessions(), 1);
    }

    #[test]
    fn firing_ids_are_the_same_in_two_watches() {
        let actions = pages(&["/a", "/b", "/a", "/b", "/a", "/b", "/a"], T0, 2.0);
        let one = feed(&mut Watch::new(all_on()), "s1", &actions);
        let two = feed(&mut Watch::new(all_on()), "s1", &actions);
        assert!(!one.is_empty());
        assert_eq!(one.iter().map(|f| &f.id).collect::<Vec<_>>(), two.iter().map(|f| &f.id).collect::<Vec<_>>());
    }

    #[test]
    fn anonymous_batches_and_off_settings_do_nothing() {
        let mut w = Watch::new(all_on());
        let mut out = Vec::new();
        for id in [None, Some("unknown"), Some(" ")] {
            let b =
                BatchRecord { session_id: id.map(Into::into), ..batch("x", pages(&["/a", "/b", "/a", "/b"], T0, 1.0)) };
            assert!(w.observe(&b, Instant::now(), SystemTime::now(), &mut out));
        }
        assert!(out.is_empty());
        assert_eq!(w.sessions(), 0);
        let mut off = Watch::new(TriggerSettings::default());
        assert!(feed(&mut off, "s1", &pages(&["/a", "/b", "/a", "/b"], T0, 1.0)).is_empty());
        assert_eq!(off.sessions(), 0);
    }

    #[test]
    fn stream_text_is_cut_and_made_one_line() {
        let mut w = Watch::new(only(Trigger::ErrorPage));
        let long = format!("/error\r\n{}", "x".repeat(1000));
        let fired = feed(&mut w, "s1", &[ActionRecord { title: "Error\nInjected: line".into(), ..act(&long, T0) }]);
        assert_eq!(fired[0].page.chars().count(), MAX_FIRING_TEXT);
        assert!(fired[0].page.starts_with("/error  x"));
        assert!(fired[0].detail.chars().count() <= MAX_FIRING_TEXT);
        assert!(!fired[0].detail.contains('\n'));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_sessions_are_forgotten_and_the_cap_holds() {
        let mut w = Watch::new(all_on());
        w.max_sessions = 3;
        for s in ["s1", "s2", "s3"] {
            feed(&mut w, s, &[act("/a", T0)]);
        }
        let mut out = Vec::new();
        assert!(!w.observe(&batch("s4", vec![act("/a", T0)]), Instant::now(), SystemTime::now(), &mut out));
        assert_eq!((w.sessions(), w.untracked_total()), (3, 1));
        tokio::time::advance(Duration::from_secs(100)).await;
        feed(&mut w, "s2", &[act("/b", T0 + 100.0)]);
        assert_eq!(w.forget_idle(Instant::now()), 0);
        tokio::time::advance(Duration::from_secs(81)).await; // s1, s3: 181 s > 120 + 60
        assert_eq!(w.forget_idle(Instant::now()), 2);
        assert_eq!(w.sessions(), 1);
        assert!(w.observe(&batch("s4", vec![act("/a", T0)]), Instant::now(), SystemTime::now(), &mut out));
        tokio::time::advance(Duration::from_secs(3600)).await;
        w.due(Instant::now(), SystemTime::now(), &mut out); // stale checks of forgotten sessions are skipped
        assert_eq!(w.forget_idle(Instant::now()), 2);
        assert_eq!(w.sessions(), 0);
        assert!(w.slots.is_empty() && w.dwell_fifo.is_empty());
    }

    fn triples_by_scan(p: &PingPong) -> usize {
        (0..p.visits.len().saturating_sub(2)).filter(|&i| p.is_triple(i)).count()
    }

    proptest! {
        #[test]
        fn random_actions_never_panic_or_outgrow_the_bounds(
            actions in proptest::collection::vec(
                (0usize..6, 0usize..3, prop_oneof![Just(0.0), -5.0..5.0f64, Just(f64::MAX), Just(-1e300)],
                 0u64..30, 0usize..4),
                1..300,
            ),
            cycles in 1usize..4,
        ) {
            let settings = TriggerSettings {
                ping_pong_cycles: cycles,
                lookback: Duration::from_secs(20),
                dwell: Duration::from_secs(5),
                ..all_on()
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let mut w = Watch::new(settings);
                let mut out = Vec::new();
                let mut t = T0;
                for (page, title, jitter, wait, session) in actions {
                    t += jitter.clamp(-5.0, 5.0);
                    let urls = ["", "/a", "/b", "/c", "/error", "/\n"];
                    let a = ActionRecord {
                        title: ["x", "y", "Error"][title].into(),
                        timestamp_start: if jitter == 0.0 { 0.0 } else { t + jitter },
                        timestamp_end: t + jitter.abs(),
                        ..act(urls[page], 0.0)
                    };
                    let before = out.len();
                    w.observe(&batch(&format!("s{session}"), vec![a]), Instant::now(), SystemTime::now(), &mut out);
                    assert!(out.len() - before <= 1);
                    tokio::time::advance(Duration::from_millis(wait * 100)).await;
                    w.due(Instant::now(), SystemTime::now(), &mut out);
                    w.forget_idle(Instant::now());
                    for s in w.slots.iter().flatten() {
                        assert!(s.ping.visits.len() <= MAX_WINDOW);
                        assert_eq!(s.ping.triples, triples_by_scan(&s.ping));
                        assert!(s.page_text.chars().count() <= MAX_FIRING_TEXT);
                    }
                    assert!(w.dwell_fifo.len() + w.dwell_later.len() <= w.sessions());
                }
                for f in &out {
                    assert!(f.page.chars().count() <= MAX_FIRING_TEXT && f.detail.chars().count() <= MAX_FIRING_TEXT);
                    assert!(!f.detail.contains('\n') && !f.page.contains('\n'));
                }
            });
        }
    }
}
