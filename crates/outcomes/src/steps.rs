//! The step rule: which names in an answer are steps, and when a visitor's action follows one.
//! See the crate documentation for the rule in words.

use activity::action::ActionRecord;
use serde::{Deserialize, Serialize};

/// Most steps taken from one answer.
pub const MAX_STEPS: usize = 10;
/// Most words in one step (a longer quotation is a sentence, not a name).
pub const MAX_STEP_WORDS: usize = 6;
/// Longest word kept in a step.
pub const MAX_WORD_CHARS: usize = 40;
/// Longest step name, in characters.
pub const MAX_NAME_CHARS: usize = 80;
/// Longest quotation read as a name, in characters.
const MAX_QUOTED_CHARS: usize = 60;

/// A name the answer pointed the visitor to ("Export CSV").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// As written in the answer, without the UI verb ("Export CSV"): what the follow-up says.
    pub name: String,
    /// Normalised: lowercase, no UI verb, no stop words (`["export", "csv"]`): what is matched.
    pub words: Vec<String>,
}

/// UI verbs stripped from the start of a name (lowercase word sequences, longest first).
const UI_VERBS: &[&[&str]] = &[
    &["head", "over", "to"],
    &["navigate", "to"],
    &["go", "to"],
    &["head", "to"],
    &["switch", "to"],
    &["scroll", "to"],
    &["click", "on"],
    &["tap", "on"],
    &["klicken", "sie", "auf"],
    &["cliquez", "sur"],
    &["haz", "clic", "en"],
    &["click"],
    &["tap"],
    &["press"],
    &["hit"],
    &["open"],
    &["select"],
    &["choose"],
    &["pick"],
    &["visit"],
    &["use"],
    &["toggle"],
    &["ouvrez"],
    &["allez"],
    &["sélectionnez"],
    &["klicken"],
    &["öffnen"],
    &["wählen"],
    &["abre"],
    &["selecciona"],
];

/// Words dropped from names and from topics: articles, pronouns, connectives, UI nouns.
const STOP_WORDS: &[&str] = &[
    // English
    "the",
    "a",
    "an",
    "to",
    "of",
    "at",
    "for",
    "and",
    "or",
    "your",
    "my",
    "our",
    "this",
    "that",
    "then",
    "next",
    "now",
    "first",
    "finally",
    "here",
    "there",
    "please",
    "i",
    "you",
    "it",
    "is",
    "are",
    "be",
    "we",
    "button",
    "link",
    "icon",
    "tab",
    "page",
    "how",
    "do",
    "does",
    "can",
    "what",
    "where",
    "why",
    "with",
    "from",
    "me",
    // French
    "le",
    "la",
    "les",
    "un",
    "une",
    "des",
    "du",
    "de",
    "sur",
    "dans",
    "et",
    "ou",
    "votre",
    "vos",
    "puis",
    "je",
    "vous",
    "bouton",
    "lien",
    "onglet",
    // German
    "der",
    "die",
    "das",
    "ein",
    "eine",
    "und",
    "oder",
    "auf",
    "im",
    "den",
    "dem",
    "ihr",
    "ihre",
    "dann",
    "ich",
    "sie",
    "schaltfläche",
    "seite",
    // Spanish
    "el",
    "los",
    "las",
    "y",
    "o",
    "en",
    "del",
    "su",
    "sus",
    "luego",
    "yo",
    "botón",
    "boton",
    "enlace",
    "página",
];

pub(crate) fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.contains(&word)
}

/// The steps an answer names, before the activity filter: quoted names (`"…"`, `'…'`, `“…”`,
/// `‘…’`, `«…»`, `` `…` ``, `**…**`), runs of two or more Capitalised words anywhere, and single
/// Capitalised words not at the start of a sentence; normalised and deduplicated, at most
/// [`MAX_STEPS`].
pub fn steps_named(answer_text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut push = |phrase: &str| {
        if steps.len() < MAX_STEPS
            && let Some(step) = normalise(phrase)
            && !steps.iter().any(|s| s.words == step.words)
        {
            steps.push(step);
        }
    };
    let (quoted, masked) = quotations(answer_text);
    for phrase in &quoted {
        push(phrase);
    }
    for phrase in capitalised(&masked) {
        push(&phrase);
    }
    steps
}

/// The quoted names, and the text with each quotation (delimiters included) replaced by `|`.
fn quotations(text: &str) -> (Vec<String>, String) {
    const PAIRS: &[(&str, &str, bool)] = &[
        // (open, close, needs a word boundary around it)
        ("**", "**", false),
        ("`", "`", false),
        ("\u{201c}", "\u{201d}", false),
        ("\u{2018}", "\u{2019}", true),
        ("\u{ab}", "\u{bb}", false),
        ("\"", "\"", true),
        ("'", "'", true),
    ];
    let mut taken: Vec<(usize, usize)> = Vec::new();
    let mut found: Vec<(usize, String)> = Vec::new();
    for &(open, close, boundary) in PAIRS {
        let mut from = 0;
        while let Some(rel) = text[from..].find(open) {
            let start = from + rel;
            from = start + open.len();
            if taken.iter().any(|&(s, e)| start >= s && start < e) {
                continue;
            }
            if boundary && text[..start].chars().next_back().is_some_and(char::is_alphanumeric) {
                continue;
            }
            let inner_start = start + open.len();
            let Some(close_rel) = text[inner_start..].find(close) else { break };
            let inner_end = inner_start + close_rel;
            let end = inner_end + close.len();
            let inner = &text[inner_start..inner_end];
            let invalid = inner.trim().is_empty()
                || inner.starts_with(char::is_whitespace)
                || inner.contains('\n')
                || inner.chars().count() > MAX_QUOTED_CHARS
                || (boundary && text[end..].chars().next().is_some_and(char::is_alphanumeric))
                || taken.iter().any(|&(s, e)| inner_end >= s && inner_end < e);
            if !invalid {
                taken.push((start, end));
                found.push((start, inner.to_owned()));
                from = end;
            }
        }
    }
    found.sort_by_key(|(at, _)| *at);
    let masked =
        text.char_indices().map(|(i, c)| if taken.iter().any(|&(s, e)| i >= s && i < e) { '|' } else { c }).collect();
    (found.into_iter().map(|(_, phrase)| phrase).collect(), masked)
}

/// Runs of Capitalised words joined by spaces: a run of two or more anywhere, a single word
/// only when it does not start a sentence.
fn capitalised(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    let mut run_at_sentence_start = false;
    let flush = |run: &mut Vec<&str>, at_start: bool, out: &mut Vec<String>| {
        if run.len() >= 2 || (run.len() == 1 && !at_start) {
            out.push(run.join(" "));
        }
        run.clear();
    };
    let mut sentence_start = true;
    let mut joined = false; // only spaces since the previous word
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c.is_alphanumeric() {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                let hyphen = d == '-' && text[j + 1..].chars().next().is_some_and(char::is_alphanumeric);
                if !(d.is_alphanumeric() || hyphen) {
                    break;
                }
                end = j + d.len_utf8();
                chars.next();
            }
            let word = &text[i..end];
            if c.is_uppercase() {
                if !joined || run.is_empty() {
                    flush(&mut run, run_at_sentence_start, &mut out);
                    run_at_sentence_start = sentence_start;
                }
                run.push(word);
            } else {
                flush(&mut run, run_at_sentence_start, &mut out);
            }
            sentence_start = false;
            joined = true;
        } else {
            if matches!(c, '.' | '!' | '?' | ':' | '\n' | '\u{2022}') {
                sentence_start = true;
            }
            if !matches!(c, ' ' | '\t') {
                joined = false;
            }
        }
    }
    flush(&mut run, run_at_sentence_start, &mut out);
    out
}

/// A phrase as a step: words lowercased, a leading UI verb and stop words dropped; `None` when
/// nothing is left or it is too long to be a name.
fn normalise(phrase: &str) -> Option<Step> {
    let tokens: Vec<(usize, usize, String)> =
        word_spans(phrase).map(|(s, e)| (s, e, phrase[s..e].to_lowercase())).collect();
    let mut first = 0;
    'verbs: loop {
        for verb in UI_VERBS {
            let n = verb.len();
            if tokens.len() >= first + n && tokens[first..first + n].iter().zip(verb.iter()).all(|(t, v)| t.2 == *v) {
                first += n;
                continue 'verbs;
            }
        }
        break;
    }
    let kept: Vec<&(usize, usize, String)> = tokens[first..].iter().filter(|t| !is_stop_word(&t.2)).collect();
    let (start, end) = (kept.first()?.0, kept.last()?.1);
    if kept.len() > MAX_STEP_WORDS || kept.iter().any(|t| t.2.chars().count() > MAX_WORD_CHARS) {
        return None;
    }
    let name: String =
        phrase[start..end].chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_NAME_CHARS).collect();
    Some(Step { name, words: kept.iter().map(|t| t.2.clone()).collect() })
}

/// Byte spans of the words of `text`: maximal runs of alphanumeric characters.
fn word_spans(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut chars = text.char_indices().peekable();
    std::iter::from_fn(move || {
        let (start, c) = chars.find(|(_, c)| c.is_alphanumeric())?;
        let mut end = start + c.len_utf8();
        while let Some(&(j, d)) = chars.peek() {
            if !d.is_alphanumeric() {
                break;
            }
            end = j + d.len_utf8();
            chars.next();
        }
        Some((start, end))
    })
}

/// The words of `text`, lowercase and folded (see [`fold`]).
pub(crate) fn folded_words(text: &str) -> impl Iterator<Item = String> + '_ {
    word_spans(text).map(move |(s, e)| fold(&text[s..e].to_lowercase()))
}

/// A word as compared: lowercase, a plural `s` dropped ("settings" = "setting").
pub(crate) fn fold(word: &str) -> String {
    let lower = word.to_lowercase();
    if lower.chars().count() > 3 && lower.ends_with('s') && !lower.ends_with("ss") {
        lower[..lower.len() - 1].to_owned()
    } else {
        lower
    }
}

/// The path of a URL (scheme, host, query and fragment left out).
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest.split_once('/').map_or("", |(_, path)| path));
    rest.split(['?', '#']).next().unwrap_or("")
}

/// The words an action offers to match: its title, details and URL path segments (split on
/// `/`, `-`, `_` and any other punctuation).
pub(crate) fn action_words(action: &ActionRecord<'_>) -> Vec<String> {
    let mut words: Vec<String> = folded_words(&action.title)
        .chain(folded_words(&action.description))
        .chain(folded_words(url_path(&action.canonical_url)))
        .chain(folded_words(url_path(&action.raw_url)))
        .collect();
    words.sort_unstable();
    words.dedup();
    words
}

/// Whether `action` follows `step`: every word of the step is a word of the action's title,
/// details or URL path (plurals folded, case ignored).
pub fn matches_step(step: &Step, action: &ActionRecord<'_>) -> bool {
    !step.words.is_empty() && {
        let words = action_words(action);
        step.words.iter().all(|w| words.binary_search(&fold(w)).is_ok())
    }
}

/// The steps of `named` that occur in `actions` (the visitor's own activity).
pub fn steps_in_activity(named: &[Step], actions: &[ActionRecord<'_>]) -> Vec<Step> {
    named.iter().filter(|step| actions.iter().any(|a| matches_step(step, a))).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        steps_named(text).into_iter().map(|s| s.name).collect()
    }

    fn action(title: &str, url: &str) -> ActionRecord<'static> {
        ActionRecord { title: title.to_owned().into(), canonical_url: url.to_owned().into(), ..ActionRecord::default() }
    }

    #[test]
    fn capitalised_names_not_at_sentence_start() {
        assert_eq!(names("open Settings, then click Export CSV"), ["Settings", "Export CSV"]);
        assert_eq!(names("Open the billing page. Then it works."), Vec::<String>::new(), "sentence-start capitals");
        assert_eq!(names("Go to Billing Settings and press Save."), ["Billing Settings", "Save"]);
        let steps = steps_named("Click Export CSV at the top.");
        assert_eq!(steps, [Step { name: "Export CSV".into(), words: vec!["export".into(), "csv".into()] }]);
        assert_eq!(names("Yes. I think you can."), Vec::<String>::new());
    }

    #[test]
    fn quoted_and_bold_names() {
        assert_eq!(names("click **Export CSV** on the “Reports” page"), ["Export CSV", "Reports"]);
        assert_eq!(names("choose 'download all' and `api-keys`"), ["download all", "api-keys"]);
        assert_eq!(names("don't worry, it's fine"), Vec::<String>::new(), "apostrophes are not quotes");
        assert_eq!(names("press \"Go to the Invoices\""), ["Invoices"]);
        assert_eq!(names("\"click the button\""), Vec::<String>::new(), "nothing left once normalised");
        let long = format!("\"{}\"", "word ".repeat(20));
        assert!(steps_named(&long).is_empty());
    }

    #[test]
    fn names_are_deduplicated_and_bounded() {
        assert_eq!(names("Click **Export CSV**, then Export CSV again"), ["Export CSV"]);
        let many: String = (0..30).map(|i| format!("then open Page{i}, ")).collect();
        assert_eq!(steps_named(&many).len(), MAX_STEPS);
    }

    #[test]
    fn a_step_matches_title_details_or_url_path() {
        let step = &steps_named("then click Export CSV")[0];
        assert!(matches_step(step, &action("Click Export CSV button", "https://app.example.com/reports")));
        assert!(matches_step(step, &action("Click Download", "https://app.example.com/reports/export_csv")));
        assert!(!matches_step(step, &action("Click Export", "https://app.example.com/reports")), "every word");
        assert!(!matches_step(step, &action("Click Download", "https://csv.example.com/export")), "not the host");
        let settings = &steps_named("open Billing Settings")[0];
        assert!(matches_step(settings, &action("Page Load: Billing settings", "")));
        assert!(matches_step(settings, &action("", "https://app.example.com/billing-setting?tab=1")));
        let details = ActionRecord { description: "clicked Export CSV".into(), ..ActionRecord::default() };
        assert!(matches_step(step, &details));
    }

    #[test]
    fn only_names_in_the_visitors_activity_are_steps() {
        let named = steps_named("open Settings, then click Export CSV, or ask Stripe");
        assert_eq!(named.len(), 3);
        let seen = [action("Page Load: Settings", "https://app.example.com/settings")];
        let steps = steps_in_activity(&named, &seen);
        assert_eq!(steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["Settings"]);
    }
}
