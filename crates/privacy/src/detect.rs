//! The detectors: regexes compiled once, then checks (Luhn, mod-97, the phone library) that
//! keep look-alikes out.

use phonenumber::country;
use regex::Regex;

use crate::kind::{Kind, Kinds};
use crate::placeholders::placeholder_spans;
use crate::settings::{Settings, SettingsError, compile_extra};

/// One value found: its byte range in the text, its kind, and its normalized form (same key =
/// same placeholder).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Found {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
    pub key: String,
}

pub(crate) struct Detectors {
    kinds: Kinds,
    region: country::Id,
    pem: Regex,
    url: Regex,
    token: Regex,
    bearer: Regex,
    pair: Regex,
    email: Regex,
    extra: Vec<Regex>,
}

/// Most phone-library calls for one run of digits (a long run of short numbers costs no more).
const MAX_PHONE_TRIES: usize = 32;

const PEM: &str = r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY-----(?s:.*?)(?:-----END[A-Z0-9 ]{0,40}PRIVATE KEY-----|\z)";

const URL: &str = r#"(?i)(?-u:\b)(?:https?://|www\.)[^\s<>"'`{}|\\^\[\]]+"#;

/// Provider API keys and JWTs: the whole match is the secret.
const TOKEN: &str = r"(?-u:\b)(?:sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}|[spr]k_(?:live|test)_[A-Za-z0-9]{10,}|(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}|xox[abprse]-[A-Za-z0-9\-]{10,}|AIza[0-9A-Za-z_\-]{35}|eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*)";

const BEARER: &str = r"(?i)(?-u:\b)bearer[ \t]+([A-Za-z0-9\-._~+/]{8,}=*)";

/// `password: …`, `api_key=…`, `"secret": "…"`: group 1, 2 or 3 is the value.
const PAIR: &str = r#"(?i)(?-u:\b)(?:password|passwd|passphrase|passcode|pwd|pin|secret|client[_\-]?secret|api[_\-]?key|apikey|access[_\-]?key|secret[_\-]?key|private[_\-]?key|access[_\-]?token|auth[_\-]?token|refresh[_\-]?token|token)["']?[ \t]*[:=][ \t]*(?:"([^"\r\n]{1,256})"|'([^'\r\n]{1,256})'|([^\s"',;]{1,256}))"#;

const EMAIL: &str = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?-u:\b)";

impl Detectors {
    pub fn new(settings: &Settings) -> Result<Detectors, SettingsError> {
        let re = |p: &str| Regex::new(p).expect("built-in pattern compiles");
        let extra = settings
            .extra_patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                compile_extra(p).map_err(|e| SettingsError::BadPattern {
                    index: i + 1,
                    pattern: p.clone(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Detectors {
            kinds: settings.kinds,
            region: settings.phone_region,
            pem: re(PEM),
            url: re(URL),
            token: re(TOKEN),
            bearer: re(BEARER),
            pair: re(PAIR),
            email: re(EMAIL),
            extra,
        })
    }

    /// Every value in `text`, in order, none overlapping (and none inside a placeholder already
    /// there). Earlier detectors win an overlap: PEM blocks, extra patterns, URLs, secrets,
    /// emails, IBANs, cards, phones.
    pub fn find(&self, text: &str) -> Vec<Found> {
        let mut c = Collector::default();
        if self.kinds.is_empty() {
            return c.found;
        }
        if memchr::memchr(b'[', text.as_bytes()).is_some() {
            placeholder_spans(text, &mut c.taken);
        }
        let on = |k| self.kinds.contains(k);
        if on(Kind::Secret) {
            for m in self.pem.find_iter(text) {
                c.add(m.start(), m.end(), Kind::Secret, m.as_str());
            }
        }
        for re in &self.extra {
            if re.captures_len() > 1 {
                for caps in re.captures_iter(text) {
                    if let Some(m) = caps.get(1).filter(|m| !m.is_empty()) {
                        c.add(m.start(), m.end(), Kind::Secret, m.as_str());
                    }
                }
            } else {
                for m in re.find_iter(text).filter(|m| !m.is_empty()) {
                    c.add(m.start(), m.end(), Kind::Secret, m.as_str());
                }
            }
        }
        if on(Kind::UrlQuery) || on(Kind::Secret) {
            for m in self.url.find_iter(text) {
                let url = trim_end(m.as_str(), ".,;:!?'\")]}*");
                self.url_parts(url, m.start(), &mut c);
            }
        }
        if on(Kind::Secret) {
            for m in self.token.find_iter(text) {
                let s = m.as_str();
                let body = s.strip_prefix("sk-").or_else(|| s.strip_prefix("xox").map(|b| b.get(2..).unwrap_or("")));
                if body.is_none_or(looks_random) {
                    c.add(m.start(), m.end(), Kind::Secret, s);
                }
            }
            for caps in self.bearer.captures_iter(text) {
                let m = caps.get(1).expect("group 1");
                let token = trim_end(m.as_str(), ".");
                if token.len() >= 8 && token.bytes().any(|b| b.is_ascii_digit()) {
                    c.add(m.start(), m.start() + token.len(), Kind::Secret, token);
                }
            }
            for caps in self.pair.captures_iter(text) {
                let Some(m) = caps.get(1).or_else(|| caps.get(2)).or_else(|| caps.get(3)) else {
                    continue;
                };
                let value = if caps.get(3).is_some() { trim_end(m.as_str(), ".!?)]}") } else { m.as_str() };
                if !value.trim().is_empty() {
                    c.add(m.start(), m.start() + value.len(), Kind::Secret, value);
                }
            }
        }
        if on(Kind::Email) && memchr::memchr(b'@', text.as_bytes()).is_some() {
            for m in self.email.find_iter(text) {
                let s = m.as_str();
                let lead = s.len() - s.trim_start_matches('.').len();
                let s = &s[lead..];
                if !s.starts_with('@') {
                    c.add(m.start() + lead, m.end(), Kind::Email, &s.to_lowercase());
                }
            }
        }
        // Cards, IBANs and phones are found by hand-written byte scanners: digit-dense text
        // (dates, prices, order numbers) costs a regex ~80 ns a match, these a few ns a byte.
        if on(Kind::Iban) {
            let b = text.as_bytes();
            let mut i = 0;
            while i + 4 <= b.len() {
                if b[i].is_ascii_alphabetic()
                    && b[i + 1].is_ascii_alphabetic()
                    && b[i + 2].is_ascii_digit()
                    && b[i + 3].is_ascii_digit()
                    && (i == 0 || !is_word(b[i - 1]))
                    && let Some((end, compact)) = iban_at(text, i)
                {
                    c.add(i, end, Kind::Iban, &compact);
                    i = end;
                } else {
                    i += 1;
                }
            }
        }
        if on(Kind::Card) {
            for (start, end) in digit_runs(text.as_bytes(), b" -", 1, 13) {
                if text[..start].ends_with('+') {
                    continue;
                }
                cards_in(text, start, end, &mut c);
            }
        }
        if on(Kind::Phone) {
            for (start, end) in phone_runs(text.as_bytes()) {
                self.phones_in(text, start, end, &mut c);
            }
        }
        c.found.sort_unstable_by_key(|f| f.start);
        c.found
    }

    /// The parts of one URL to hide: query values and the fragment (path kept), and a password
    /// in `user:password@host`.
    fn url_parts(&self, url: &str, base: usize, c: &mut Collector) {
        let after_scheme = url.find("://").map_or(0, |i| i + 3);
        let auth_end = url[after_scheme..].find(['/', '?', '#']).map_or(url.len(), |i| after_scheme + i);
        if self.kinds.contains(Kind::Secret) {
            let auth = &url[after_scheme..auth_end];
            if let Some(at) = auth.rfind('@')
                && let Some(colon) = auth[..at].find(':')
                && colon + 1 < at
            {
                let (s, e) = (base + after_scheme + colon + 1, base + after_scheme + at);
                c.add(s, e, Kind::Secret, &url[s - base..e - base]);
            }
        }
        if !self.kinds.contains(Kind::UrlQuery) {
            return;
        }
        let hash = url[auth_end..].find('#').map(|i| auth_end + i);
        let query = url[auth_end..hash.unwrap_or(url.len())].find('?').map(|i| auth_end + i);
        if let Some(q) = query {
            params(url, q + 1, hash.unwrap_or(url.len()), base, c);
        }
        if let Some(h) = hash {
            let frag = &url[h + 1..];
            if frag.starts_with('/') || frag.starts_with('!') {
                // A hash route (`#/reset?token=…`): its own query only.
                if let Some(q) = frag.find('?') {
                    params(url, h + 1 + q + 1, url.len(), base, c);
                }
            } else if frag.contains('=') || frag.contains('&') {
                params(url, h + 1, url.len(), base, c);
            } else if !is_anchor(frag) {
                c.add(base + h + 1, base + url.len(), Kind::UrlQuery, frag);
            }
        }
    }

    /// Phone numbers in one run of digits and separators: the longest span of whole
    /// space-separated chunks from the run's start that is a valid number, then the same on
    /// what is left (`(415) 555-2671 3000000`). At most [`MAX_PHONE_TRIES`] library calls a
    /// run.
    fn phones_in(&self, text: &str, start: usize, end: usize, c: &mut Collector) {
        let run = &text.as_bytes()[start..end];
        let mut chunks: Vec<(usize, usize)> = Vec::new();
        let mut chunk_start = None;
        for (i, &b) in run.iter().enumerate() {
            match (b == b' ' || b == b'\t', chunk_start) {
                (false, None) => chunk_start = Some(i),
                (true, Some(s)) => {
                    chunks.push((start + s, start + i));
                    chunk_start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = chunk_start {
            chunks.push((start + s, end));
        }
        let digits = |s: usize, e: usize| text.as_bytes()[s..e].iter().filter(|b| b.is_ascii_digit()).count();
        let mut tries = 0;
        let mut i = 0;
        'outer: while i < chunks.len() {
            for j in (i..chunks.len()).rev() {
                let (s, e) = (chunks[i].0, chunks[j].1);
                if !(7..=15).contains(&digits(s, e)) || !c.is_free(s, e) {
                    continue;
                }
                if tries == MAX_PHONE_TRIES {
                    return;
                }
                tries += 1;
                if let Some(key) = self.phone_key(text, s, e) {
                    c.add(s, e, Kind::Phone, &key);
                    i = j + 1;
                    continue 'outer;
                }
            }
            // A stray short number before the phone (`I have 2 (415) 555-2671`) is skipped; a
            // longer chunk that starts no number ends the search, so no number is read out of
            // the middle of a long run (tracking numbers, grouped digits).
            if digits(chunks[i].0, chunks[i].1) >= 3 {
                return;
            }
            i += 1;
        }
    }

    /// The E.164 form of `text[start..end]` if it is a valid phone number standing on its own.
    fn phone_key(&self, text: &str, start: usize, end: usize) -> Option<String> {
        let bytes = text.as_bytes();
        let mut s = &text[start..end];
        // A trailing `(` or `)` belongs to the sentence, not the number.
        while let Some(t) = s.strip_suffix(['(', ')', ' ', '.', '-']) {
            s = t;
        }
        let end = start + s.len();
        if let Some(&prev) = start.checked_sub(1).map(|i| &bytes[i])
            && (prev.is_ascii_alphanumeric()
                || prev >= 0x80
                || b"_-./@#$%&=+,\\".contains(&prev)
                || (prev == b':' && text[..start - 1].ends_with(|ch: char| ch.is_ascii_digit())))
        {
            return None;
        }
        if let Some(&next) = bytes.get(end)
            && (next.is_ascii_alphanumeric() || next == b'_' || next == b'%' || next >= 0x80)
        {
            return None;
        }
        if matches!(bytes.get(end), Some(b'.' | b',' | b':' | b'/'))
            && bytes.get(end + 1).is_some_and(u8::is_ascii_digit)
        {
            return None;
        }
        let digits = s.bytes().filter(u8::is_ascii_digit).count();
        if !(7..=15).contains(&digits) || looks_like_date_or_version(s) {
            return None;
        }
        let owned;
        let candidate = if let Some(rest) = s.strip_prefix("00") {
            owned = format!("+{rest}");
            owned.as_str()
        } else {
            s
        };
        let number = phonenumber::parse(Some(self.region), candidate).ok()?;
        let code = number.code().value();
        let national = number.national().to_string();
        phone_valid(code, &national).then(|| format!("+{code}{national}"))
    }
}

/// Whether `national` is a valid number for country code `code` by libphonenumber's metadata
/// (the `phonenumber` crate's): its length is one the country uses and it matches the
/// country's general number pattern (the union of its fixed-line, mobile, toll-free, … ranges).
///
/// The crate's own `is_valid` asks the same metadata which of those ranges the number is in,
/// through a locked regex cache: 5-11 µs a number, against well under 1 µs here with the
/// patterns compiled once per country (on first use) into plain regexes.
fn phone_valid(code: u16, national: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::{Arc, RwLock};
    type Compiled = RwLock<HashMap<usize, Option<Arc<Regex>>>>;
    static COMPILED: std::sync::OnceLock<Compiled> = std::sync::OnceLock::new();

    let Some(metas) = phonenumber::metadata::DATABASE.by_code(&code) else {
        return false;
    };
    let compiled = COMPILED.get_or_init(Default::default);
    metas.into_iter().any(|meta| {
        let general = meta.descriptors().general();
        let lengths = general.possible_length();
        if !lengths.is_empty() && !lengths.contains(&(national.len() as u16)) {
            return false;
        }
        let id = std::ptr::from_ref(meta) as usize;
        let cached = compiled.read().ok().and_then(|m| m.get(&id).cloned());
        let re = match cached {
            Some(re) => re,
            None => {
                // The metadata's patterns are written with insignificant whitespace.
                let pattern = format!("^(?:{})$", general.national_number().as_str());
                let re = regex::RegexBuilder::new(&pattern).ignore_whitespace(true).build().ok().map(Arc::new);
                if let Ok(mut m) = compiled.write() {
                    m.insert(id, re.clone());
                }
                re
            }
        };
        let Some(re) = re else {
            return false;
        };
        re.is_match(national)
    })
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Runs of digits joined by at most `max_sep` bytes of `seps` (`4242 4242 …`), standing on
/// their own (no letter, digit or `_` just before or after: a glued end is cut back to the
/// last separator), with at least `min_digits` digits.
fn digit_runs<'a>(
    b: &'a [u8],
    seps: &'static [u8],
    max_sep: usize,
    min_digits: usize,
) -> impl Iterator<Item = (usize, usize)> + 'a {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            if !b[i].is_ascii_digit() || (i > 0 && is_word(b[i - 1])) {
                i += 1;
                continue;
            }
            let start = i;
            let (mut end, mut digits, mut last_sep) = (i, 0, None);
            loop {
                while end < b.len() && b[end].is_ascii_digit() {
                    end += 1;
                    digits += 1;
                }
                let mut j = end;
                while j < b.len() && j - end < max_sep && seps.contains(&b[j]) {
                    j += 1;
                }
                if j > end && j < b.len() && b[j].is_ascii_digit() {
                    last_sep = Some((end, digits));
                    end = j;
                } else {
                    break;
                }
            }
            i = end;
            if end < b.len() && is_word(b[end]) {
                // Glued to a word: keep the part before the last separator.
                match last_sep {
                    Some((e, d)) => (end, digits) = (e, d),
                    None => continue,
                }
            }
            if digits >= min_digits {
                return Some((start, end));
            }
        }
        None
    })
}

/// Phone candidates: an optional `+` and `(`, then digits joined by up to 3 of ` \t.-()`.
fn phone_runs(b: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            if !b[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let mut start = i;
            if start > 0 && b[start - 1] == b'(' {
                start -= 1;
            }
            if start > 0 && b[start - 1] == b'+' {
                start -= 1;
            }
            let (mut end, mut digits) = (i, 0);
            loop {
                while end < b.len() && b[end].is_ascii_digit() {
                    end += 1;
                    digits += 1;
                }
                let mut j = end;
                while j < b.len() && j - end < 3 && b" \t.-()".contains(&b[j]) {
                    j += 1;
                }
                if j > end && j < b.len() && b[j].is_ascii_digit() {
                    end = j;
                } else {
                    break;
                }
            }
            i = end;
            if digits >= 7 {
                return Some((start, end));
            }
        }
        None
    })
}

/// Spans taken so far; a later candidate that overlaps one is dropped.
#[derive(Default)]
struct Collector {
    taken: Vec<(usize, usize)>,
    found: Vec<Found>,
}

impl Collector {
    fn is_free(&self, start: usize, end: usize) -> bool {
        !self.taken.iter().any(|&(s, e)| start < e && s < end)
    }

    fn add(&mut self, start: usize, end: usize, kind: Kind, key: &str) {
        if start >= end || !self.is_free(start, end) {
            return;
        }
        self.taken.push((start, end));
        self.found.push(Found { start, end, kind, key: key.to_owned() });
    }
}

fn trim_end<'a>(s: &'a str, chars: &str) -> &'a str {
    s.trim_end_matches(|ch| chars.contains(ch))
}

/// At least two of digits, lower case and upper case: a random key, not `sk-learn-tutorial…`.
fn looks_random(body: &str) -> bool {
    let d = body.bytes().any(|b| b.is_ascii_digit());
    let l = body.bytes().any(|b| b.is_ascii_lowercase());
    let u = body.bytes().any(|b| b.is_ascii_uppercase());
    (d as u8 + l as u8 + u as u8) >= 2
}

fn is_anchor(frag: &str) -> bool {
    frag.is_empty()
        || (frag.len() <= 64
            && frag.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            && frag.bytes().filter(u8::is_ascii_digit).nth(7).is_none())
}

/// Query values in `url[from..to]` (`a=1&b=2`): each non-empty value, or a bare parameter.
fn params(url: &str, from: usize, to: usize, base: usize, c: &mut Collector) {
    let mut pos = from;
    for piece in url[from..to].split(['&', ';']) {
        let (s, e) = match piece.find('=') {
            Some(eq) => (pos + eq + 1, pos + piece.len()),
            None => (pos, pos + piece.len()),
        };
        if s < e {
            c.add(base + s, base + e, Kind::UrlQuery, &url[s..e]);
        }
        pos += piece.len() + 1;
    }
}

/// Dates (`2024-03-15`, `15.03.2024`), IP addresses and version strings are not phones.
fn looks_like_date_or_version(s: &str) -> bool {
    let groups: Vec<&str> = s.split(|ch: char| !ch.is_ascii_digit()).filter(|g| !g.is_empty()).collect();
    let dots = s.bytes().filter(|&b| b == b'.').count();
    let seps: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_digit() && *b != b' ').collect();
    let one_sep = !seps.is_empty() && seps.iter().all(|&b| b == seps[0]);
    if dots >= 3 {
        return true;
    }
    if groups.len() == 3 && one_sep && matches!(seps[0], b'-' | b'.') {
        let l: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        return matches!(l[..], [4, 1..=2, 1..=2] | [1..=2, 1..=2, 2 | 4]);
    }
    false
}

/// The IBAN starting at `start`, if the country's length of characters from there (single
/// spaces or dashes between) passes mod-97: its end and compact upper-case form.
fn iban_at(text: &str, start: usize) -> Option<(usize, String)> {
    let b = text.as_bytes();
    let country = [b[start].to_ascii_uppercase(), b[start + 1].to_ascii_uppercase()];
    let len = iban_length(&country)?;
    let mut compact = String::with_capacity(len);
    let mut i = start;
    while compact.len() < len && i < b.len() {
        let ch = b[i];
        if ch.is_ascii_alphanumeric() {
            compact.push(ch.to_ascii_uppercase() as char);
            i += 1;
        } else if (ch == b' ' || ch == b'-')
            && i > start
            && b[i - 1].is_ascii_alphanumeric()
            && b.get(i + 1).is_some_and(u8::is_ascii_alphanumeric)
        {
            i += 1;
        } else {
            break;
        }
    }
    if compact.len() != len || b.get(i).is_some_and(u8::is_ascii_alphanumeric) {
        return None;
    }
    iban_valid(&compact).then_some((i, compact))
}

/// ISO 13616 mod-97 check of a compact upper-case IBAN.
pub(crate) fn iban_valid(iban: &str) -> bool {
    let b = iban.as_bytes();
    if b.len() < 15 || !b[2..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut rem: u32 = 0;
    for &ch in b[4..].iter().chain(&b[..4]) {
        rem = match ch {
            b'0'..=b'9' => (rem * 10 + u32::from(ch - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(ch - b'A' + 10)) % 97,
            _ => return false,
        };
    }
    rem == 1
}

/// IBAN length by country (ISO 13616 registry).
pub(crate) fn iban_length(country: &[u8; 2]) -> Option<usize> {
    const TABLE: &[(&[u8; 2], usize)] = &[
        (b"AD", 24),
        (b"AE", 23),
        (b"AL", 28),
        (b"AT", 20),
        (b"AZ", 28),
        (b"BA", 20),
        (b"BE", 16),
        (b"BG", 22),
        (b"BH", 22),
        (b"BR", 29),
        (b"BY", 28),
        (b"CH", 21),
        (b"CR", 22),
        (b"CY", 28),
        (b"CZ", 24),
        (b"DE", 22),
        (b"DK", 18),
        (b"DO", 28),
        (b"EE", 20),
        (b"EG", 29),
        (b"ES", 24),
        (b"FI", 18),
        (b"FO", 18),
        (b"FR", 27),
        (b"GB", 22),
        (b"GE", 22),
        (b"GI", 23),
        (b"GL", 18),
        (b"GR", 27),
        (b"GT", 28),
        (b"HR", 21),
        (b"HU", 28),
        (b"IE", 22),
        (b"IL", 23),
        (b"IQ", 23),
        (b"IS", 26),
        (b"IT", 27),
        (b"JO", 30),
        (b"KW", 30),
        (b"KZ", 20),
        (b"LB", 28),
        (b"LC", 32),
        (b"LI", 21),
        (b"LT", 20),
        (b"LU", 20),
        (b"LV", 21),
        (b"LY", 25),
        (b"MC", 27),
        (b"MD", 24),
        (b"ME", 22),
        (b"MK", 19),
        (b"MR", 27),
        (b"MT", 31),
        (b"MU", 30),
        (b"NL", 18),
        (b"NO", 15),
        (b"PK", 24),
        (b"PL", 28),
        (b"PS", 29),
        (b"PT", 25),
        (b"QA", 29),
        (b"RO", 24),
        (b"RS", 22),
        (b"SA", 24),
        (b"SC", 31),
        (b"SE", 24),
        (b"SI", 19),
        (b"SK", 24),
        (b"SM", 27),
        (b"ST", 25),
        (b"SV", 28),
        (b"TL", 23),
        (b"TN", 24),
        (b"TR", 26),
        (b"UA", 29),
        (b"VA", 22),
        (b"VG", 24),
        (b"XK", 20),
    ];
    TABLE.iter().find(|(c, _)| *c == country).map(|&(_, len)| len)
}

/// Card numbers in one run of digits with single spaces or dashes: the whole run if it has
/// 13-19 digits, else leading windows of whole groups (`4242 4242 4242 4242 123`), each
/// Luhn-valid and starting with 2-6 (the issuers' ranges: Mastercard 2/5, Amex/Diners/JCB 3,
/// Visa 4, Discover/Maestro/UnionPay 6).
fn cards_in(text: &str, start: usize, end: usize, c: &mut Collector) {
    let run = &text[start..end];
    if card_ok(run) {
        c.add(start, end, Kind::Card, &digits_of(run));
        return;
    }
    // Digit groups (start, end) inside the run.
    let mut groups = Vec::new();
    let mut g = None;
    for (i, ch) in run.bytes().enumerate() {
        match (ch.is_ascii_digit(), g) {
            (true, None) => g = Some(i),
            (false, Some(s)) => {
                groups.push((s, i));
                g = None;
            }
            _ => {}
        }
    }
    if let Some(s) = g {
        groups.push((s, run.len()));
    }
    // Windows that start where the run starts (a card followed by its CVV or expiry), then,
    // after a card, where that card ends (two cards in a row). Never a window in the middle of
    // a longer run (tracking numbers).
    let mut i = 0;
    while i < groups.len() {
        let found = (i..groups.len()).rev().find(|&j| {
            let window = &run[groups[i].0..groups[j].1];
            groups[i..=j].iter().all(|&(s, e)| e - s >= 3) && card_ok(window)
        });
        let Some(j) = found else {
            // A stray short number before the card (`qty 2 4242 4242 4242 4242`) is skipped;
            // a full group that starts no card ends the search.
            if groups[i].1 - groups[i].0 < 3 {
                i += 1;
                continue;
            }
            break;
        };
        let window = &run[groups[i].0..groups[j].1];
        c.add(start + groups[i].0, start + groups[j].1, Kind::Card, &digits_of(window));
        i = j + 1;
    }
}

fn digits_of(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

fn card_ok(s: &str) -> bool {
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    (13..=19).contains(&digits) && matches!(s.as_bytes()[0], b'2'..=b'6') && luhn_valid(s)
}

/// Luhn check over the digits of `s` (other characters skipped).
pub(crate) fn luhn_valid(s: &str) -> bool {
    let mut sum = 0;
    for (i, d) in s.bytes().rev().filter(u8::is_ascii_digit).map(|b| u32::from(b - b'0')).enumerate() {
        sum += if i % 2 == 1 {
            let x = d * 2;
            if x > 9 { x - 9 } else { x }
        } else {
            d
        };
    }
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums() {
        assert!(luhn_valid("4242 4242 4242 4242"));
        assert!(!luhn_valid("4242 4242 4242 4241"));
        assert!(iban_valid("DE89370400440532013000"));
        assert!(iban_valid("GB29NWBK60161331926819"));
        assert!(!iban_valid("DE89370400440532013001"));
    }

    #[test]
    fn dates_and_versions() {
        assert!(looks_like_date_or_version("2024-03-15"));
        assert!(looks_like_date_or_version("15.03.2024"));
        assert!(looks_like_date_or_version("10.0.19045.3803"));
        assert!(!looks_like_date_or_version("415-555-2671"));
        assert!(!looks_like_date_or_version("(415) 555-2671"));
    }
}
