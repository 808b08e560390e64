//! The phrase fallback for "thanks, that worked" (used when the model does not say so itself),
//! and its opposite, "it still doesn't work". Lowercase phrases matched at word boundaries,
//! like [`answer::handoff::asks_for_a_person`].

/// Phrases that say the answer worked, in the languages visitors most often write.
const WORKED: &[&str] = &[
    // English
    "that worked",
    "it worked",
    "worked",
    "works now",
    "it works",
    "that works",
    "working now",
    "solved",
    "fixed",
    "got it",
    "found it",
    "that did it",
    "that helped",
    "perfect",
    "all good",
    "sorted",
    // French
    "ça marche",
    "ca marche",
    "ça fonctionne",
    "ca fonctionne",
    "c'est bon",
    "résolu",
    "parfait",
    "j'ai trouvé",
    // German
    "funktioniert",
    "hat geklappt",
    "geklappt",
    "gelöst",
    "perfekt",
    "gefunden",
    // Spanish
    "funcionó",
    "funciono",
    "ya funciona",
    "resuelto",
    "solucionado",
    "perfecto",
    "lo encontré",
];

/// Thanks alone: a confirmation only in a short message (at most [`SHORT_THANKS_WORDS`] words),
/// since "thanks, and how do I…" is a new question.
const THANKS: &[&str] =
    &["thanks", "thank you", "thx", "cheers", "merci", "danke", "vielen dank", "gracias", "muchas gracias"];
const SHORT_THANKS_WORDS: usize = 5;

/// Phrases that say it did not work; any of them vetoes a confirmation.
const FAILED: &[&str] = &[
    // English
    "not work",
    "n't work",
    "not working",
    "n't working",
    "still",
    "no luck",
    "nothing happens",
    "nothing happened",
    "doesn't",
    "didn't",
    "does not",
    "did not",
    "can't",
    "cannot",
    "won't",
    "not fixed",
    "not solved",
    // French
    "marche pas",
    "fonctionne pas",
    "toujours pas",
    "pas résolu",
    "ne marche",
    // German
    "funktioniert nicht",
    "immer noch",
    "geht nicht",
    "klappt nicht",
    "nicht gelöst",
    // Spanish
    "no funciona",
    "no funcionó",
    "no funciono",
    "todavía no",
    "sigue sin",
    "no lo encuentro",
];

/// Whether `text` says the answer worked ("thanks, that worked", "ça marche", "hat geklappt",
/// "ya funciona", or a short "thanks!"): a confirming phrase, no question mark, and none of
/// the phrases of [`reports_failure`].
pub fn confirms(text: &str) -> bool {
    let text = prepare(text);
    if text.contains('?') || FAILED.iter().any(|p| contains_words(&text, p)) {
        return false;
    }
    WORKED.iter().any(|p| contains_words(&text, p))
        || (text.split_whitespace().count() <= SHORT_THANKS_WORDS && THANKS.iter().any(|p| contains_words(&text, p)))
}

/// Whether `text` says it did not work ("it still doesn't work", "ça ne marche pas",
/// "funktioniert nicht", "no funciona").
pub fn reports_failure(text: &str) -> bool {
    let text = prepare(text);
    FAILED.iter().any(|p| contains_words(&text, p))
}

/// Lowercase, typographic apostrophes made straight; at most 2,000 characters are read.
fn prepare(text: &str) -> String {
    text.chars().take(2000).flat_map(char::to_lowercase).map(|c| if c == '\u{2019}' { '\'' } else { c }).collect()
}

/// `phrase` in `text` at word boundaries ("fixed" in "prefixed" does not count).
fn contains_words(text: &str, phrase: &str) -> bool {
    text.match_indices(phrase).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + phrase.len()..].chars().next();
        // A phrase starting with an apostrophe ("n't") may follow a letter.
        let starts_inside = phrase.starts_with(|c: char| !c.is_alphanumeric());
        (starts_inside || !before.is_some_and(char::is_alphanumeric)) && !after.is_some_and(char::is_alphanumeric)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thanks_that_worked_in_four_languages() {
        for text in [
            "thanks, that worked",
            "Perfect, found it!",
            "ok got it",
            "It works now 🎉",
            "Thank you!",
            "merci, ça marche",
            "Super, c’est bon",
            "Danke, hat geklappt",
            "Es funktioniert, danke",
            "gracias, ya funciona",
            "¡Funcionó! Gracias",
            "thx",
        ] {
            assert!(confirms(text), "{text}");
        }
    }

    #[test]
    fn failures_questions_and_long_thanks_do_not_confirm() {
        for text in [
            "it still doesn't work",
            "That didn’t work",
            "thanks but it's not working",
            "worked? where is it",
            "Thanks, and how do I add a user to my team account",
            "ça ne marche pas",
            "es funktioniert nicht",
            "no funciona, gracias",
            "the prefixed value",
            "How do I export a CSV",
            "",
        ] {
            assert!(!confirms(text), "{text}");
        }
    }

    #[test]
    fn failure_reports() {
        for text in ["it still doesn't work", "ça ne marche toujours pas", "klappt nicht", "sigue sin funcionar"] {
            assert!(reports_failure(text), "{text}");
        }
        for text in ["thanks, that worked", "where is billing"] {
            assert!(!reports_failure(text), "{text}");
        }
    }
}
