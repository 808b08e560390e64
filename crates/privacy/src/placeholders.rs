//! One conversation's placeholder map: value -> `[KIND_n]`, and `restore()` back.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::kind::Kind;

/// Most entries one map keeps; past it the oldest is forgotten (its placeholder then stays as
/// it is in a restored answer, and the value gets a new number if it comes back).
pub const MAX_ENTRIES: usize = 256;

/// Longest value (bytes) kept for restoring; a longer one is kept as a fingerprint only, like a
/// secret, so its placeholder is never restored.
pub const MAX_VALUE_BYTES: usize = 256;

/// Masked form of a card in a restored answer: `•••• 4242`.
pub const CARD_MASK: &str = "•••• ";

/// A conversation's placeholders: the same value gets the same `[KIND_n]` on every turn
/// (numbered per kind from 1), and [`restore`](Placeholders::restore) puts values back into
/// the model's answer.
///
/// Serializable (serde) so a caller can keep it per conversation in a file or on Redis, across
/// turns and replicas. Bounded: at most [`MAX_ENTRIES`] entries of at most
/// [`MAX_VALUE_BYTES`] each. Secrets and cards are never stored in clear: a secret is kept as a
/// SHA-256 fingerprint, a card as a fingerprint and its last 4 digits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placeholders {
    /// Oldest first.
    entries: VecDeque<Entry>,
    /// The last number given, per kind (in [`Kind::ALL`] order); numbers are never reused.
    last: [u32; 6],
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    kind: Kind,
    n: u32,
    /// What identifies the value: its normalized form, or `#` and a fingerprint.
    key: String,
    /// The original text, for restorable kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    /// A card's last four digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last4: Option<String>,
}

impl Placeholders {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The placeholder number for this value, given before or new. `key` is the value's
    /// normalized form (same key = same placeholder); `raw` the text as it appeared.
    pub(crate) fn number(&mut self, kind: Kind, key: &str, raw: &str) -> u32 {
        let stored_key = if kind.restorable() && key.len() <= MAX_VALUE_BYTES {
            Key::Plain(key)
        } else {
            Key::Hashed(fingerprint(kind, key))
        };
        if let Some(e) = self.entries.iter().find(|e| e.kind == kind && stored_key.matches(&e.key)) {
            return e.n;
        }
        while self.entries.len() >= MAX_ENTRIES {
            self.entries.pop_front();
        }
        let last = &mut self.last[kind.index()];
        *last = last.saturating_add(1);
        let n = *last;
        let (value, last4) = match (kind, &stored_key) {
            (Kind::Card, _) => (None, Some(last_digits(raw, 4))),
            (_, Key::Plain(_)) if raw.len() <= MAX_VALUE_BYTES => (Some(raw.to_owned()), None),
            _ => (None, None),
        };
        self.entries.push_back(Entry { kind, n, key: stored_key.into_string(), value, last4 });
        n
    }

    /// The answer with each placeholder this map has replaced: restorable kinds by the
    /// original text, cards by `•••• 4242` (last 4 digits), secrets left as `[SECRET_n]`.
    /// A placeholder the map never had (or has forgotten) stays as it is.
    pub fn restore(&self, answer: &str) -> String {
        let bytes = answer.as_bytes();
        let mut out = String::with_capacity(answer.len());
        let mut copied = 0;
        let mut from = 0;
        while let Some(open) = memchr::memchr(b'[', &bytes[from..]).map(|i| from + i) {
            from = open + 1;
            let Some((kind, n, end)) = parse_placeholder(answer, open) else {
                continue;
            };
            let Some(entry) = self.entries.iter().find(|e| e.kind == kind && e.n == n) else {
                continue;
            };
            let replacement = match (kind, &entry.value, &entry.last4) {
                (Kind::Card, _, Some(last4)) => format!("{CARD_MASK}{last4}"),
                (Kind::Secret | Kind::Card, _, _) => continue,
                (_, Some(value), _) => value.clone(),
                _ => continue,
            };
            out.push_str(&answer[copied..open]);
            out.push_str(&replacement);
            copied = end;
            from = end;
        }
        out.push_str(&answer[copied..]);
        out
    }
}

enum Key<'a> {
    Plain(&'a str),
    Hashed(String),
}

impl Key<'_> {
    fn matches(&self, stored: &str) -> bool {
        match self {
            Key::Plain(k) => *k == stored,
            Key::Hashed(h) => h == stored,
        }
    }

    fn into_string(self) -> String {
        match self {
            Key::Plain(k) => k.to_owned(),
            Key::Hashed(h) => h,
        }
    }
}

/// `#` and the first 16 bytes of SHA-256(kind, value), hex: identifies a secret or a card
/// without storing it. (`#` cannot start a plain key of these kinds, so the two never mix.)
fn fingerprint(kind: Kind, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(kind.label().as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut s = String::with_capacity(33);
    s.push('#');
    for b in &digest[..16] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn last_digits(raw: &str, n: usize) -> String {
    let digits: Vec<char> = raw.chars().filter(char::is_ascii_digit).collect();
    digits[digits.len().saturating_sub(n)..].iter().collect()
}

/// Parses `[TAG_n]` starting at `open` (the `[`): the kind, the number and the index after `]`.
pub(crate) fn parse_placeholder(text: &str, open: usize) -> Option<(Kind, u32, usize)> {
    let rest = &text.as_bytes()[open + 1..];
    let close = rest.iter().take(24).position(|&b| b == b']')?;
    let inner = std::str::from_utf8(&rest[..close]).ok()?;
    let (tag, n) = inner.rsplit_once('_')?;
    if n.is_empty() || n.len() > 10 || !n.bytes().all(|b| b.is_ascii_digit()) || n.starts_with('0') {
        return None;
    }
    let kind = Kind::from_tag(tag)?;
    Some((kind, n.parse().ok()?, open + 1 + close + 1))
}

/// Spans (start, end) of the placeholders (`[EMAIL_3]`, `[EMAIL]`) already in `text`, so that
/// redacting a redacted text changes nothing.
pub(crate) fn placeholder_spans(text: &str, out: &mut Vec<(usize, usize)>) {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(open) = memchr::memchr(b'[', &bytes[from..]).map(|i| from + i) {
        from = open + 1;
        if let Some((_, _, end)) = parse_placeholder(text, open) {
            out.push((open, end));
            from = end;
        } else if let Some(kind) = Kind::ALL.into_iter().find(|k| text[open..].starts_with(k.log_placeholder())) {
            let end = open + kind.log_placeholder().len();
            out.push((open, end));
            from = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_value_same_number_numbered_per_kind() {
        let mut p = Placeholders::new();
        assert_eq!(p.number(Kind::Email, "a@x.io", "a@x.io"), 1);
        assert_eq!(p.number(Kind::Email, "b@x.io", "b@x.io"), 2);
        assert_eq!(p.number(Kind::Phone, "+14155552671", "(415) 555-2671"), 1);
        assert_eq!(p.number(Kind::Email, "a@x.io", "A@x.io"), 1);
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn restore_rules() {
        let mut p = Placeholders::new();
        p.number(Kind::Email, "jane@x.io", "Jane@x.io");
        p.number(Kind::Card, "4242424242424242", "4242 4242 4242 4242");
        p.number(Kind::Secret, "sk_live_abc", "sk_live_abc");
        p.number(Kind::Iban, "DE89370400440532013000", "DE89 3704 0044 0532 0130 00");
        p.number(Kind::Phone, "+14155552671", "(415) 555-2671");
        p.number(Kind::UrlQuery, "abc123", "abc123");
        let answer = "Mail [EMAIL_1], card [CARD_1], key [SECRET_1], iban [IBAN_1], \
                      call [PHONE_1], token [URL_QUERY_1]; unknown [EMAIL_9] [PHONE_0] [FOO_1] [EMAIL_1";
        assert_eq!(
            p.restore(answer),
            "Mail Jane@x.io, card •••• 4242, key [SECRET_1], iban DE89 3704 0044 0532 0130 00, \
             call (415) 555-2671, token abc123; unknown [EMAIL_9] [PHONE_0] [FOO_1] [EMAIL_1"
        );
        assert_eq!(p.restore("no placeholders"), "no placeholders");
        assert_eq!(p.restore("[[EMAIL_1]]"), "[Jane@x.io]");
    }

    #[test]
    fn secrets_and_cards_are_not_stored_in_clear() {
        let mut p = Placeholders::new();
        p.number(Kind::Secret, "sk_live_supersecret", "sk_live_supersecret");
        p.number(Kind::Card, "4242424242424242", "4242-4242-4242-4242");
        let json = serde_json::to_string(&p).unwrap();
        assert!(!json.contains("supersecret") && !json.contains("42424242"), "{json}");
        let back: Placeholders = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.restore("[CARD_1]"), "•••• 4242");
    }

    #[test]
    fn bounded_oldest_forgotten_numbers_not_reused() {
        let mut p = Placeholders::new();
        for i in 0..MAX_ENTRIES + 10 {
            let v = format!("u{i}@x.io");
            p.number(Kind::Email, &v, &v);
        }
        assert_eq!(p.len(), MAX_ENTRIES);
        assert_eq!(p.restore("[EMAIL_1]"), "[EMAIL_1]");
        assert_eq!(p.restore("[EMAIL_266]"), "u265@x.io");
        let again = p.number(Kind::Email, "u0@x.io", "u0@x.io");
        assert_eq!(again, MAX_ENTRIES as u32 + 11);
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        let n = p.number(Kind::UrlQuery, &long, &long);
        assert_eq!(p.restore(&format!("[URL_QUERY_{n}]")), format!("[URL_QUERY_{n}]"));
    }
}
