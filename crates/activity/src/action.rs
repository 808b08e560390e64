//! One UI action as the product keeps it, from the listener's ingest to the webhook's prompt:
//! the activity file, summaries, proactive triggers, the context store (its record format),
//! prompts, traces and the MCP tools all read this type. The wire type
//! ([`crate::payload::Action`]) is converted once, where a frame is read.
//!
//! Strings borrow where they can ([`ActionRecord::from_wire`] copies nothing);
//! [`ActionRecord::into_owned`] makes a copy that outlives the frame or the stored line.

use crate::payload::{self, ActionsBatch};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// What prompts show (title, details, page) and what the MCP tools return besides (type,
/// index, times, raw URL). Stored as one JSON object with the wire's field names; empty and
/// zero values are left out, so records stay short, and read back as empty and zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActionRecord<'a> {
    #[serde(borrow)]
    pub title: Cow<'a, str>,
    /// The details line.
    #[serde(borrow)]
    pub description: Cow<'a, str>,
    /// The page.
    #[serde(borrow)]
    pub canonical_url: Cow<'a, str>,
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub index: i64,
    #[serde(rename = "type", borrow, skip_serializing_if = "str::is_empty")]
    pub kind: Cow<'a, str>,
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub timestamp_start: f64,
    #[serde(skip_serializing_if = "is_zero_f64")]
    pub timestamp_end: f64,
    #[serde(borrow, skip_serializing_if = "str::is_empty")]
    pub raw_url: Cow<'a, str>,
}

impl<'a> ActionRecord<'a> {
    /// The action a frame carried, borrowing its strings.
    pub fn from_wire(action: &'a payload::Action<'_>) -> Self {
        Self {
            title: Cow::Borrowed(&action.title),
            description: Cow::Borrowed(&action.description),
            canonical_url: Cow::Borrowed(&action.canonical_url),
            index: action.index,
            kind: Cow::Borrowed(&action.kind),
            timestamp_start: action.timestamp_start,
            timestamp_end: action.timestamp_end,
            raw_url: Cow::Borrowed(&action.raw_url),
        }
    }

    /// A copy that no longer borrows.
    pub fn into_owned(self) -> ActionRecord<'static> {
        ActionRecord {
            title: owned(self.title),
            description: owned(self.description),
            canonical_url: owned(self.canonical_url),
            index: self.index,
            kind: owned(self.kind),
            timestamp_start: self.timestamp_start,
            timestamp_end: self.timestamp_end,
            raw_url: owned(self.raw_url),
        }
    }

    /// The SDK's one-line rendering: `[{index}] {type}: {description} — {canonical_url}`.
    pub fn to_text(&self) -> String {
        format!("[{}] {}: {} \u{2014} {}", self.index, self.kind, self.description, self.canonical_url)
    }
}

/// The actions of one frame with the ids it carries: what the context store and the triggers
/// take from the listener.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchRecord<'a> {
    pub session_id: Option<Cow<'a, str>>,
    pub user_id: Option<Cow<'a, str>>,
    pub conversation_id: Option<Cow<'a, str>>,
    pub actions: Vec<ActionRecord<'a>>,
}

impl<'a> BatchRecord<'a> {
    /// The frame's batch, borrowing its strings.
    pub fn from_wire(batch: &'a ActionsBatch<'_>) -> Self {
        let id = |id: &'a Option<Cow<'_, str>>| id.as_deref().map(Cow::Borrowed);
        Self {
            session_id: id(&batch.session_id),
            user_id: id(&batch.user_id),
            conversation_id: id(&batch.conversation_id),
            actions: batch.actions.iter().map(ActionRecord::from_wire).collect(),
        }
    }

    /// The batch's Autoplay session, `None` for an anonymous batch (see
    /// [`payload::session_key`]).
    pub fn session_key(&self) -> Option<&str> {
        self.session_id.as_deref().and_then(payload::session_key)
    }
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}

fn owned(s: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_keeps_what_is_read_and_reads_old_records() {
        let record = ActionRecord {
            title: "Click Save".into(),
            description: "saved".into(),
            canonical_url: "/settings".into(),
            kind: "click".into(),
            index: 3,
            timestamp_start: 1.5,
            ..ActionRecord::default()
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"title":"Click Save","description":"saved","canonical_url":"/settings","index":3,"type":"click","timestamp_start":1.5}"#
        );
        assert_eq!(serde_json::from_str::<ActionRecord>(&json).unwrap(), record);
        // A record written with only the first three fields reads the rest as empty and zero.
        let old: ActionRecord = serde_json::from_str(r#"{"title":"t","description":"d","canonical_url":"u"}"#).unwrap();
        assert_eq!((old.index, old.kind.as_ref(), old.timestamp_end), (0, "", 0.0));
    }
}
