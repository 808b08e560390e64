//! Redaction of personal data and secrets before text leaves for the LLM or a log line, and
//! restoration of the values in the model's answer.
//!
//! ```
//! use privacy::{Placeholders, Redactor, Settings};
//!
//! let redactor = Redactor::new(Settings::default()).unwrap();
//! let mut map = Placeholders::new(); // one per conversation, serde-serializable
//! let sent = redactor.redact("I'm jane@example.com, card 4242 4242 4242 4242", &mut map);
//! assert_eq!(sent, "I'm [EMAIL_1], card [CARD_1]");
//! let shown = map.restore("Thanks [EMAIL_1], the card [CARD_1] was declined.");
//! assert_eq!(shown, "Thanks jane@example.com, the card •••• 4242 was declined.");
//! ```
//!
//! # What is redacted
//!
//! | kind (`REDACT` word) | found | placeholder | `restore()` gives |
//! |---|---|---|---|
//! | `email` | `local@domain.tld` | `[EMAIL_1]` | the original |
//! | `phone` | `+` numbers of any country, and national formats of `REDACT_PHONE_REGION` (default `US`): candidates by a digit-run scanner, parsed by the `phonenumber` crate and kept only if libphonenumber's metadata for the country accepts the length and the number ranges | `[PHONE_1]` | the original |
//! | `card` | 13-19 digits, single spaces or dashes between, starting 2-6, Luhn-valid | `[CARD_1]` | `•••• 4242` (last 4) |
//! | `iban` | country code, check digits and the country's exact length (spaces or dashes allowed), mod-97-valid | `[IBAN_1]` | the original |
//! | `secret` | OpenAI `sk-…`, Stripe `sk_/pk_/rk_live_…` (and `_test_`), AWS `AKIA…`/`ASIA…`, GitHub `ghp_/gho_/ghu_/ghs_/ghr_…` and `github_pat_…`, Slack `xox[abprse]-…`, Google `AIza…`, JWTs (`eyJ….….…`), the token after `Bearer`, PEM private-key blocks, a URL's `user:password@`, the value of `password: …`, `password=…`, `api_key=…`, `token: …`, `"secret": "…"` and the like, and `REDACT_EXTRA_PATTERNS` | `[SECRET_1]` | stays `[SECRET_1]` |
//! | `url_query` | in `http(s)://` and `www.` URLs: each query value and the fragment (`#access_token=…`, a hash route's query); scheme, host, path, parameter names and plain anchors (`#pricing`) are kept | `[URL_QUERY_1]` | the original |
//!
//! The same value gets the same placeholder for the whole conversation ([`Placeholders`],
//! numbered per kind; emails compared without case, phones by their E.164 form, cards and IBANs
//! by their digits). A placeholder the map never had stays as it is in `restore()`, so a
//! model cannot make the bot reveal another conversation's values.
//!
//! # What is not
//!
//! Order and ticket numbers, dates, times, prices, version strings, IP addresses, UUIDs,
//! tracking numbers, digit runs that fail the Luhn or mod-97 checks, national phone formats of
//! other regions without `+`, numbers glued to letters or after `#`, names, postal addresses,
//! and secrets of formats not listed (add them with `REDACT_EXTRA_PATTERNS`). The detection is
//! pattern-based: it lowers what reaches the model and the logs, it does not prove that nothing
//! personal does.
//!
//! # Settings
//!
//! - `REDACT`: comma list of `email,phone,card,iban,secret,url_query` (or `all`), or `off`.
//!   Unset or empty: all.
//! - `REDACT_EXTRA_PATTERNS`: extra secret regexes (Rust [`regex`] syntax, at most 1 MiB
//!   compiled each), separated by `;;` or newlines. If a pattern has a capture group, only the
//!   first group is masked (`employee_id=(\d{6})` keeps `employee_id=`), else the whole match.
//!   They count as `secret` and run whatever `REDACT` lists, except `off`.
//!   Example: `REDACT_EXTRA_PATTERNS='EMP-\d{6};;acct_[a-z0-9]{16};;internal_ref=(\w+)'`.
//! - `REDACT_PHONE_REGION`: two-letter country code for phone numbers written without `+`
//!   (default `US`).
//!
//! Bad values are a [`SettingsError`] naming the variable and what it accepts.
//!
//! # Metrics
//!
//! The crate records nothing itself: [`Redactor::redact_counted`] returns per-kind [`Counts`]
//! for the caller's `redactions_total{kind}` counter ([`Kind::label`]).
//!
//! # Cost
//!
//! The regexes are compiled once in [`Redactor::new`] (each country's phone pattern on first
//! use, once per process); cards, IBANs and phone candidates are found by byte scanners. A text
//! with nothing to hide costs one pass and is returned borrowed, without allocation; a text
//! with values is looked at again after the replacement, until nothing new is found, so that
//! redacting twice changes nothing. `cargo run --release -p privacy --example redact_bench` prints
//! p50/p99 for 2 KB messages.

mod detect;
mod kind;
mod placeholders;
mod settings;

use std::borrow::Cow;
use std::sync::OnceLock;

pub use kind::{Counts, Kind, Kinds};
pub use placeholders::{CARD_MASK, MAX_ENTRIES, MAX_VALUE_BYTES, Placeholders};
pub use settings::{
    EXTRA_PATTERN_SEPARATOR, KindsSetting, REDACT_ACCEPTED, Settings, SettingsError, parse_extra_patterns,
};

/// Most detection passes over one text (see `replace`).
const MAX_PASSES: usize = 4;

/// Finds personal values and secrets in text (see the [crate] docs). Build one per process
/// and share it (`&self` methods, `Send + Sync`).
pub struct Redactor {
    settings: Settings,
    detectors: detect::Detectors,
}

/// A redacted text and how many values of each kind it replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redacted<'t> {
    /// Borrowed from the input when nothing was replaced.
    pub text: Cow<'t, str>,
    pub counts: Counts,
}

/// One value found by [`Redactor::find`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub kind: Kind,
    /// Byte range in the text.
    pub range: std::ops::Range<usize>,
}

impl Redactor {
    /// Compiles the detectors (once; the error is a bad `REDACT_EXTRA_PATTERNS` entry).
    pub fn new(settings: Settings) -> Result<Redactor, SettingsError> {
        let detectors = detect::Detectors::new(&settings)?;
        Ok(Redactor { settings, detectors })
    }

    /// [`Settings::from_env`], then [`Redactor::new`].
    pub fn from_env() -> Result<Redactor, SettingsError> {
        Redactor::new(Settings::from_env()?)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// `text` with each value replaced by its conversation placeholder (`[EMAIL_1]`), the map
    /// updated.
    pub fn redact(&self, text: &str, placeholders: &mut Placeholders) -> String {
        self.redact_counted(text, placeholders).text.into_owned()
    }

    /// [`redact`](Self::redact), borrowing when nothing is found, with per-kind counts.
    pub fn redact_counted<'t>(&self, text: &'t str, placeholders: &mut Placeholders) -> Redacted<'t> {
        self.replace(text, |kind, key, raw| {
            let n = placeholders.number(kind, key, raw);
            Cow::Owned(format!("[{}_{n}]", kind.tag()))
        })
    }

    /// For log lines: each value replaced by its kind's generic placeholder (`[EMAIL]`), no
    /// map. Borrowed when nothing is found.
    pub fn redact_for_log<'t>(&self, text: &'t str) -> Cow<'t, str> {
        self.redact_for_log_counted(text).text
    }

    /// [`redact_for_log`](Self::redact_for_log) with per-kind counts.
    pub fn redact_for_log_counted<'t>(&self, text: &'t str) -> Redacted<'t> {
        self.replace(text, |kind, _, _| Cow::Borrowed(kind.log_placeholder()))
    }

    /// The values in `text`, in order, without replacing them.
    pub fn find(&self, text: &str) -> Vec<Match> {
        self.detectors.find(text).into_iter().map(|f| Match { kind: f.kind, range: f.start..f.end }).collect()
    }

    /// Replaces what the detectors find, then looks again at the result until nothing new is
    /// found (at most [`MAX_PASSES`] passes): a replacement can change what a neighbour looks
    /// like (`token: +49 30 1234567` leaves `30 1234567` after the `+49` went as the token's
    /// value), and redacting a redacted text must change nothing. Text with nothing to hide
    /// costs one pass.
    fn replace<'t>(
        &self,
        text: &'t str,
        mut placeholder: impl FnMut(Kind, &str, &str) -> Cow<'static, str>,
    ) -> Redacted<'t> {
        let mut counts = Counts::default();
        let mut current = Cow::Borrowed(text);
        for _ in 0..MAX_PASSES {
            let found = self.detectors.find(&current);
            if found.is_empty() {
                break;
            }
            let mut out = String::with_capacity(current.len());
            let mut copied = 0;
            for f in &found {
                out.push_str(&current[copied..f.start]);
                out.push_str(&placeholder(f.kind, &f.key, &current[f.start..f.end]));
                counts.add(f.kind);
                copied = f.end;
            }
            out.push_str(&current[copied..]);
            current = Cow::Owned(out);
        }
        Redacted { text: current, counts }
    }
}

impl Default for Redactor {
    /// Every kind, no extra pattern, US phone region.
    fn default() -> Self {
        Redactor::new(Settings::default()).expect("default settings compile")
    }
}

/// One-shot log helper with the default settings (every kind): `[EMAIL]`, `[CARD]`, … in
/// place of values. The detectors are built on first use and kept.
pub fn redact_for_log(text: &str) -> Cow<'_, str> {
    static DEFAULT: OnceLock<Redactor> = OnceLock::new();
    DEFAULT.get_or_init(Redactor::default).redact_for_log(text)
}
