//! The kinds of value the redactor finds, sets of them, and per-kind counts.

use serde::{Deserialize, Serialize};

/// What a redacted value was. Its [`label`](Kind::label) is the metric label
/// (`redactions_total{kind}`) and the `REDACT` word; its [`tag`](Kind::tag) names the placeholder
/// (`[EMAIL_1]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Email,
    Phone,
    Card,
    Iban,
    Secret,
    UrlQuery,
}

impl Kind {
    /// Every kind, in placeholder-number order.
    pub const ALL: [Kind; 6] = [Kind::Email, Kind::Phone, Kind::Card, Kind::Iban, Kind::Secret, Kind::UrlQuery];

    /// The word used in `REDACT` and as the metric label: `email`, `phone`, `card`, `iban`,
    /// `secret`, `url_query`.
    pub const fn label(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::Card => "card",
            Kind::Iban => "iban",
            Kind::Secret => "secret",
            Kind::UrlQuery => "url_query",
        }
    }

    /// The placeholder's name: `EMAIL` in `[EMAIL_1]`.
    pub const fn tag(self) -> &'static str {
        match self {
            Kind::Email => "EMAIL",
            Kind::Phone => "PHONE",
            Kind::Card => "CARD",
            Kind::Iban => "IBAN",
            Kind::Secret => "SECRET",
            Kind::UrlQuery => "URL_QUERY",
        }
    }

    /// The placeholder used without a conversation map ([`crate::Redactor::redact_for_log`]).
    pub const fn log_placeholder(self) -> &'static str {
        match self {
            Kind::Email => "[EMAIL]",
            Kind::Phone => "[PHONE]",
            Kind::Card => "[CARD]",
            Kind::Iban => "[IBAN]",
            Kind::Secret => "[SECRET]",
            Kind::UrlQuery => "[URL_QUERY]",
        }
    }

    /// Whether [`crate::Placeholders::restore`] gives the original back (cards come back
    /// masked, secrets not at all).
    pub const fn restorable(self) -> bool {
        !matches!(self, Kind::Card | Kind::Secret)
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn from_label(word: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.label() == word)
    }

    pub(crate) fn from_tag(tag: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.tag() == tag)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// A set of [`Kind`]s (which detectors run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kinds(u8);

impl Kinds {
    /// Every kind (the default).
    pub const ALL: Kinds = Kinds(0b11_1111);
    /// No kind (`REDACT=off`).
    pub const NONE: Kinds = Kinds(0);

    pub const fn contains(self, kind: Kind) -> bool {
        self.0 & (1 << kind as u8) != 0
    }

    pub const fn with(self, kind: Kind) -> Kinds {
        Kinds(self.0 | (1 << kind as u8))
    }

    pub const fn without(self, kind: Kind) -> Kinds {
        Kinds(self.0 & !(1 << kind as u8))
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |k| self.contains(*k))
    }
}

impl Default for Kinds {
    fn default() -> Self {
        Kinds::ALL
    }
}

impl FromIterator<Kind> for Kinds {
    fn from_iter<I: IntoIterator<Item = Kind>>(iter: I) -> Self {
        iter.into_iter().fold(Kinds::NONE, Kinds::with)
    }
}

/// How many values of each kind one call replaced (each occurrence counts), for the caller's
/// `redactions_total{kind}` counter: `for (kind, n) in counts.iter() { metrics.counter_with(…,
/// &[("kind", kind.label())]).increment(n) }`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts([u64; 6]);

impl Counts {
    pub fn get(&self, kind: Kind) -> u64 {
        self.0[kind.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// The kinds with a non-zero count.
    pub fn iter(&self) -> impl Iterator<Item = (Kind, u64)> + '_ {
        Kind::ALL.into_iter().map(|k| (k, self.get(k))).filter(|(_, n)| *n > 0)
    }

    pub(crate) fn add(&mut self, kind: Kind) {
        self.0[kind.index()] += 1;
    }

    /// Adds another call's counts (for a caller that totals several texts).
    pub fn merge(&mut self, other: &Counts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}
