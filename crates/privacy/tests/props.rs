//! Property tests: random valid values of each kind in random text are always masked and
//! `restore()` gives them back (cards masked, secrets not); `redact` never panics; redacting a
//! redacted text changes nothing.

mod common;

use std::sync::OnceLock;

use common::Rng;
use privacy::{Kind, Placeholders, Redactor};
use proptest::prelude::*;

fn redactor() -> &'static Redactor {
    static R: OnceLock<Redactor> = OnceLock::new();
    R.get_or_init(Redactor::default)
}

fn kind() -> impl Strategy<Value = Kind> {
    prop::sample::select(Kind::ALL.to_vec())
}

/// Words and spaces: text around a value that holds nothing to redact.
fn filler() -> impl Strategy<Value = String> {
    "[a-z]{1,8}( [a-z]{1,8}){0,5}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_values_are_masked_and_restored(
        kind in kind(),
        seed in any::<u64>(),
        before in filler(),
        after in filler(),
        sep_before in prop::sample::select(vec![" ", "\n", ": ", " (", " \""]),
        sep_after in prop::sample::select(vec![" ", "\n", ". ", ") ", "\" ", ", "]),
    ) {
        let mut r = Rng::new(seed);
        let (typed, values) = common::personal(&mut r, kind);
        // `(` or `"` right before a URL or a key=value pair reads the same; keep the pairs simple.
        let text = format!("{before}{sep_before}{typed}{sep_after}{after}");
        let mut map = Placeholders::new();
        let out = redactor().redact_counted(&text, &mut map);
        for v in &values {
            prop_assert!(!out.text.contains(v.as_str()), "{:?} leaked in {:?}", v, out.text);
        }
        let restored = map.restore(&out.text);
        match kind {
            Kind::Card => {
                let digits: String = typed.chars().filter(char::is_ascii_digit).collect();
                let masked = format!("•••• {}", &digits[digits.len() - 4..]);
                prop_assert!(restored.contains(&masked), "{:?}", restored);
                prop_assert!(!restored.contains(&typed));
            }
            Kind::Secret => {
                prop_assert!(restored.contains("[SECRET_1]"), "{:?}", restored);
                for v in &values {
                    prop_assert!(!restored.contains(v.as_str()));
                }
            }
            _ => prop_assert_eq!(restored, text),
        }
    }

    #[test]
    fn redact_never_panics(text in any::<String>()) {
        let mut map = Placeholders::new();
        let _ = redactor().redact(&text, &mut map);
        let _ = redactor().redact_for_log(&text);
        let _ = map.restore(&text);
    }

    /// Text made of the pieces values are made of, so the detectors' edge cases get hit.
    #[test]
    fn redact_never_panics_on_value_like_text(
        text in "([0-9]{1,5}|[ \\-.()+#@:=/?&\\[\\]_]|[A-Za-z]{1,4}|sk-|eyJ|https://|Bearer |password|[ÿé€•]|\n){0,40}"
    ) {
        let mut map = Placeholders::new();
        let _ = redactor().redact(&text, &mut map);
        let _ = redactor().redact_for_log(&text);
    }

    #[test]
    fn redacting_twice_changes_nothing(
        text in "([0-9]{1,5}|[ \\-.()+#@:=/?&]|[A-Za-z]{1,6}|https://x.io/a?t=|token: |\n){0,40}",
        kind in kind(),
        seed in any::<u64>(),
    ) {
        let mut r = Rng::new(seed);
        let (typed, _) = common::personal(&mut r, kind);
        for input in [text.clone(), format!("{text} {typed} {text}")] {
            let mut map = Placeholders::new();
            let once = redactor().redact(&input, &mut map);
            let twice = redactor().redact(&once, &mut map);
            prop_assert_eq!(&twice, &once);
            let log_once = redactor().redact_for_log(&input).into_owned();
            prop_assert_eq!(redactor().redact_for_log(&log_once).into_owned(), log_once);
        }
    }
}

#[test]
fn same_value_same_placeholder_across_turns_and_a_serde_round_trip() {
    let r = redactor();
    let mut map = Placeholders::new();
    let first = r.redact("mail me at jane@example.com or +44 20 7946 0958", &mut map);
    assert_eq!(first, "mail me at [EMAIL_1] or [PHONE_1]");
    let stored = serde_json::to_string(&map).unwrap();
    let mut map: Placeholders = serde_json::from_str(&stored).unwrap();
    let second = r.redact("new: bob@example.com, old: JANE@example.com, 020 7946 0958 no, +442079460958", &mut map);
    assert_eq!(second, "new: [EMAIL_2], old: [EMAIL_1], 020 7946 0958 no, [PHONE_1]");
    assert_eq!(
        map.restore("[EMAIL_1] / [EMAIL_2] / [PHONE_1] / [EMAIL_3]"),
        "jane@example.com / bob@example.com / +44 20 7946 0958 / [EMAIL_3]"
    );
}

#[test]
fn url_query_values_and_fragment_go_path_stays() {
    let r = redactor();
    let mut map = Placeholders::new();
    let out = r.redact(
        "link https://app.example.com/reset?token=abc123XYZ&lang=en#access_token=eyJx9 and https://docs.example.com/guide#installation.",
        &mut map,
    );
    assert_eq!(
        out,
        "link https://app.example.com/reset?token=[URL_QUERY_1]&lang=[URL_QUERY_2]#access_token=[URL_QUERY_3] and https://docs.example.com/guide#installation."
    );
    assert_eq!(
        r.redact_for_log("https://u:hunter2@example.com/p?x=1"),
        "https://u:[SECRET]@example.com/p?x=[URL_QUERY]"
    );
}

#[test]
fn log_helper_borrows_when_nothing_found_and_counts_kinds() {
    let text = "order #100234567 on 2024-03-15 for $1,299.99, v2.14.3";
    assert!(matches!(privacy::redact_for_log(text), std::borrow::Cow::Borrowed(_)));
    let out =
        redactor().redact_for_log_counted("a@b.io c@d.io 4242 4242 4242 4242 password: x1 DE89 3704 0044 0532 0130 00");
    assert_eq!(out.text, "[EMAIL] [EMAIL] [CARD] password: [SECRET] [IBAN]");
    let counts: Vec<(&str, u64)> = out.counts.iter().map(|(k, n)| (k.label(), n)).collect();
    assert_eq!(counts, [("email", 2), ("card", 1), ("iban", 1), ("secret", 1)]);
}

#[test]
fn settings_select_kinds_and_extra_patterns() {
    let settings = privacy::Settings::parse(Some("email"), Some(r"EMP-\d{6};;employee_id=(\w+)"), None).unwrap();
    let r = Redactor::new(settings).unwrap();
    assert_eq!(
        r.redact_for_log("jane@x.io 4242 4242 4242 4242 EMP-123456 employee_id=abc9"),
        "[EMAIL] 4242 4242 4242 4242 [SECRET] employee_id=[SECRET]"
    );
    let off = Redactor::new(privacy::Settings::parse(Some("off"), Some("EMP-\\d+"), None).unwrap()).unwrap();
    assert_eq!(off.redact_for_log("jane@x.io EMP-1"), "jane@x.io EMP-1");
}

#[test]
fn phone_region_setting_reads_national_numbers() {
    let gb = Redactor::new(privacy::Settings::parse(None, None, Some("GB")).unwrap()).unwrap();
    assert_eq!(gb.redact_for_log("ring 020 7946 0958 please"), "ring [PHONE] please");
    assert_eq!(redactor().redact_for_log("ring 020 7946 0958 please"), "ring 020 7946 0958 please");
    // `+` numbers of any country, whatever the region.
    assert_eq!(gb.redact_for_log("+1 415 555 2671"), "[PHONE]");
    let _ = Rng::new(0);
}
