//! Random text never makes the step rule or the phrase detector panic, and their output stays
//! bounded; random event sequences never decide an outcome twice for one answer.

use activity::action::ActionRecord;
use outcomes::steps::{MAX_NAME_CHARS, MAX_STEP_WORDS, MAX_STEPS, MAX_WORD_CHARS};
use outcomes::{ConversationOutcome, Effect, Settings, Trouble, confirms, matches_step, reports_failure, steps_named};
use proptest::prelude::*;

/// Text made of the pieces the rules look at: quotes, bold, capitals, punctuation, accents.
fn texty() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("“".to_owned()),
        Just("”".to_owned()),
        Just("**".to_owned()),
        Just("`".to_owned()),
        Just(". ".to_owned()),
        Just(", ".to_owned()),
        Just("\n".to_owned()),
        Just(" ".to_owned()),
        Just("Click".to_owned()),
        Just("Export CSV".to_owned()),
        Just("thanks".to_owned()),
        Just("ça marche".to_owned()),
        Just("n't".to_owned()),
        "[A-Z][a-z]{0,8}",
        "[a-zé]{1,8}",
        "\\PC{0,12}",
    ];
    prop::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn steps_named_is_bounded(text in prop_oneof![texty(), "\\PC{0,400}"]) {
        let steps = steps_named(&text);
        prop_assert!(steps.len() <= MAX_STEPS);
        for step in &steps {
            prop_assert!(!step.words.is_empty() && step.words.len() <= MAX_STEP_WORDS);
            prop_assert!(step.words.iter().all(|w| w.chars().count() <= MAX_WORD_CHARS));
            prop_assert!(step.name.chars().count() <= MAX_NAME_CHARS);
            prop_assert!(!step.name.chars().any(char::is_control));
            // A step always matches an action titled with its own name.
            let action = ActionRecord { title: step.name.clone().into(), ..ActionRecord::default() };
            prop_assert!(matches_step(step, &action), "{step:?}");
        }
    }

    #[test]
    fn confirms_never_panics_and_never_both_ways(text in prop_oneof![texty(), "\\PC{0,400}"]) {
        let confirmed = confirms(&text);
        prop_assert!(!(confirmed && reports_failure(&text)));
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn an_outcome_is_decided_at_most_once_per_answer(
        events in prop::collection::vec((0u8..7, 0u32..80, texty()), 0..40)
    ) {
        let settings = Settings { confirm_secs: 2.0, window_secs: 4.0, ..Settings::default() };
        let mut c = ConversationOutcome::new("c", &settings);
        let mut per_answer: Vec<Vec<outcomes::Outcome>> = vec![Vec::new()];
        let mut follow_ups = vec![0usize];
        for (kind, tenths, text) in events {
            let at = 100.0 + f64::from(tenths) / 10.0;
            let action = ActionRecord { title: text.clone().into(), timestamp_start: at, ..ActionRecord::default() };
            let answers_before = c.answers;
            let effects = match kind {
                0 => c.visitor_wrote(at, &text),
                1 => c.answered(at, &text, std::slice::from_ref(&action), Trouble::default()),
                2 => c.model_confirmed(at),
                3 => c.handed_off(at, "asked"),
                4 => c.activity(at, std::slice::from_ref(&action)),
                5 => c.trigger_fired(at, proactive::Trigger::ErrorPage),
                _ => c.tick(at),
            };
            if c.answers != answers_before {
                per_answer.push(Vec::new());
                follow_ups.push(0);
            }
            for effect in effects {
                match effect {
                    Effect::CountOutcome(o) => {
                        let current = per_answer.last_mut().unwrap();
                        prop_assert!(!current.contains(&o), "{o:?} twice");
                        current.push(o);
                    }
                    Effect::SendFollowUp { .. } => *follow_ups.last_mut().unwrap() += 1,
                    _ => {}
                }
            }
        }
        prop_assert!(follow_ups.iter().all(|n| *n <= 1));
    }
}
