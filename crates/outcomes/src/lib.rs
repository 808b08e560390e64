//! What became of the bot's answers: each answer's outcome (confirmed, assumed, escalated,
//! stuck, reopened), the one follow-up, proactive offer learning, and the report. Pure logic and
//! serde state: every event takes its time (Unix seconds), and returns the effects the caller
//! applies (segments, metrics, a follow-up message); records are kept through an
//! [`OutcomeStore`].
//!
//! # The step rule
//!
//! An answer points the visitor to *steps*: the names of things in the product.
//!
//! - [`steps_named`]`(answer_text)` takes the names out of the answer: text quoted with `"…"`,
//!   `'…'`, `“…”`, `‘…’`, `«…»`, `` `…` `` or `**…**` (bold), runs of two or more Capitalised
//!   words anywhere ("Export CSV", "Billing Settings"), and single Capitalised words that do not
//!   start a sentence ("open Settings, then click Export CSV" names "Settings" and "Export
//!   CSV"; "Open the billing page" names nothing). Each name is normalised: case-folded,
//!   punctuation trimmed, a leading UI verb stripped (click, click on, tap, press, open, go to,
//!   navigate to, select, choose, visit, use…), stop words dropped (articles, pronouns,
//!   connectives and the UI nouns button, link, icon, tab, page); a name left empty, longer than
//!   6 words, or repeated is dropped; at most 10 per answer.
//! - [`matches_step`]`(step, action)`: the step matches a visitor action when all its words
//!   appear among the words of the action's title ("Click Export CSV button", "Page Load:
//!   Billing settings"), its details, or its URL's path segments (split on `/`, `-`, `_` and other
//!   punctuation; the host and query are not read). Words compare case-insensitively, with a
//!   plural `s` folded ("settings" = "setting").
//! - Only names that actually occur in the visitor's own recent page titles, button labels or
//!   URLs count as steps: a name the visitor's activity before the answer matches is a step of
//!   the answer ([`ConversationOutcome::steps`]), and so is a name an action after the answer
//!   matches (which confirms the answer). A name that matches nothing the visitor did, before
//!   or after, is never a step: it neither confirms an answer nor appears in a follow-up.
//!
//! # Outcomes
//!
//! See [`Outcome`] and [`ConversationOutcome`]: each outcome is decided at most once per
//! answer; an event replayed (same or older time) returns no effects, so replicas replaying
//! events never count an outcome twice. At most one follow-up is sent per answer.
//!
//! # Driving it
//!
//! Per conversation: load the record ([`OutcomeStore::get`], or [`ConversationOutcome::new`]),
//! apply the event, store it ([`OutcomeStore::put`]), then apply the returned [`Effect`]s in
//! order (a crash between the two loses an effect rather than doubling it).

pub mod confirm;
pub mod metrics;
pub mod offers;
pub mod outcome;
pub mod report;
pub mod segments;
pub mod settings;
pub mod steps;
pub mod store;

pub use confirm::{confirms, reports_failure};
pub use offers::{OfferEvent, OfferResult, OfferStats, TriggerOffers};
pub use outcome::{ConversationOutcome, Effect, Outcome, PastAnswer, Trouble, follow_up_text, looks_like_error};
pub use report::{Report, TriggerReport};
pub use segments::{is_outcome_segment, merge_segments, segments_to_write};
pub use settings::{OfferSettings, Settings, SettingsError};
pub use steps::{Step, matches_step, steps_in_activity, steps_named};
pub use store::{FileStore, MemoryStore, OutcomeStore, StoreError};
