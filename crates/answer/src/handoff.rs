//! Handing a conversation over to a human: the tool the model calls to decide it, the phrase
//! detector used when the LLM server takes no tools, and the private note operators get.

use activity::context::SessionContext;
use llm::Tool;

/// The function offered to the model in every reply request.
pub const TOOL_NAME: &str = "hand_off_to_human";

/// Why the bot handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The visitor asked for a person.
    Asked,
    /// The model judged it cannot help.
    Unable,
    /// The reply ended in the fallback message (the LLM failed): context only, no hand-off.
    Failed,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Asked => "asked",
            Reason::Unable => "unable",
            Reason::Failed => "failed",
        }
    }

    fn explained(self) -> &'static str {
        match self {
            Reason::Asked => "the visitor asked to talk to a person",
            Reason::Unable => "the bot could not help with this request",
            Reason::Failed => "the bot could not answer (the LLM failed) and sent its fallback message",
        }
    }
}

/// The model's decision, read from its tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub reason: Reason,
    /// One sentence for the teammate, when the model gave one.
    pub summary: Option<String>,
}

impl Decision {
    /// From the call's arguments (JSON text); anything unreadable still hands over.
    pub fn from_arguments(arguments: &str) -> Self {
        let value: serde_json::Value = serde_json::from_str(arguments).unwrap_or_default();
        let reason = match value.get("reason").and_then(|r| r.as_str()) {
            Some("asked") => Reason::Asked,
            _ => Reason::Unable,
        };
        let summary = value
            .get("summary")
            .and_then(|s| s.as_str())
            .map(|s| s.chars().take(300).collect::<String>().replace(['\r', '\n'], " "))
            .filter(|s| !s.trim().is_empty());
        Self { reason, summary }
    }
}

pub fn tool() -> Tool {
    Tool {
        name: TOOL_NAME,
        description: "Hand the conversation over to a human teammate instead of answering. Call it when the user asks \
            to talk to a person (a human, an agent, an operator, someone from the team; in any language or wording), \
            or when you cannot help: the request needs someone with access you do not have, or you cannot solve \
            the problem from what you know. Do not call it for questions you can answer.",
        parameters: serde_json::json!({
            "type": "object",
            "properties": {
                "reason": {
                    "type": "string",
                    "enum": ["asked", "unable"],
                    "description": "asked: the user asked for a person; unable: you cannot help with this"
                },
                "summary": {
                    "type": "string",
                    "description": "One sentence for the teammate: what the user needs"
                }
            },
            "required": ["reason"]
        }),
    }
}

/// Phrases of an explicit request for a person, lowercase, in the languages visitors most
/// often write; used only when the LLM server takes no tools.
const ASKS_FOR_A_PERSON: &[&str] = &[
    // English
    "human",
    "real person",
    "live agent",
    "agent please",
    "talk to someone",
    "speak to someone",
    "speak with someone",
    "representative",
    "someone from your team",
    "a teammate",
    // French
    "humain",
    "une personne",
    "un conseiller",
    "une conseillère",
    "parler à quelqu",
    "parler a quelqu",
    "un agent",
    "un opérateur",
    // Spanish
    "humano",
    "una persona",
    "persona real",
    "hablar con alguien",
    "un agente",
    "un asesor",
    // German
    "mensch",
    "mitarbeiter",
    "echte person",
    "mit jemandem sprechen",
    // Portuguese, Italian
    "atendente",
    "falar com alguém",
    "una persona reale",
    "parlare con qualcuno",
    "un operatore",
];

/// Whether `text` explicitly asks for a person.
pub fn asks_for_a_person(text: &str) -> bool {
    let text = text.to_lowercase();
    ASKS_FOR_A_PERSON.iter().any(|phrase| contains_words(&text, phrase))
}

/// `phrase` in `text` at word boundaries ("human" in "humanity" does not count).
fn contains_words(text: &str, phrase: &str) -> bool {
    text.match_indices(phrase).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + phrase.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// The private note operators see: why, the latest summary, the last 10 actions (title, page,
/// how long ago) and how the chat was linked to the activity.
pub fn note(
    reason: Reason,
    model_summary: Option<&str>,
    context: Option<&SessionContext>,
    linked_by: &str,
    now_secs: f64,
) -> String {
    let mut note = format!("🤝 Handed over by the bot: {}.", reason.explained());
    if let Some(summary) = model_summary {
        note.push_str(&format!("\nWhat they need: {summary}"));
    }
    let Some(context) = context.filter(|c| c.summary.is_some() || !c.actions.is_empty()) else {
        note.push_str("\n\nNo activity is linked to this chat (the widget did not set autoplay_session_id).");
        return note;
    };
    note.push_str(&format!("\nLinked to the visitor's activity by {linked_by}."));
    if let Some(summary) = context.summary.as_deref().filter(|s| !s.trim().is_empty()) {
        note.push_str(&format!("\n\nLatest summary: {}", one_line(summary)));
    }
    let newest = &context.actions[context.actions.len().saturating_sub(10)..];
    if !newest.is_empty() {
        note.push_str("\n\nLast actions (newest last):");
        for action in newest {
            let at = if action.timestamp_end > 0.0 { action.timestamp_end } else { action.timestamp_start };
            let ago = if at > 0.0 { format!(" ({} ago)", ago(now_secs - at)) } else { String::new() };
            note.push_str(&format!("\n- {} on {}{ago}", one_line(&action.title), one_line(&action.canonical_url)));
        }
    }
    note
}

fn one_line(text: &str) -> String {
    text.trim().replace(['\r', '\n'], " ")
}

fn ago(secs: f64) -> String {
    let secs = secs.max(0.0) as u64;
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        _ => format!("{} h", secs / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use activity::action::ActionRecord;

    #[test]
    fn explicit_requests_in_several_languages_are_detected() {
        for text in [
            "Can I talk to a human?",
            "agent please",
            "I want a real person",
            "je veux parler à quelqu'un",
            "Je voudrais un conseiller",
            "quiero hablar con alguien",
            "Ich möchte mit einem Mitarbeiter sprechen",
            "HUMAN",
        ] {
            assert!(asks_for_a_person(text), "{text}");
        }
        for text in ["How do I export a CSV?", "humanity is great", "the user agent string", "Where is billing?"] {
            assert!(!asks_for_a_person(text), "{text}");
        }
    }

    #[test]
    fn tool_arguments_are_read_leniently() {
        assert_eq!(
            Decision::from_arguments(r#"{"reason":"asked","summary":"Wants a refund"}"#),
            Decision { reason: Reason::Asked, summary: Some("Wants a refund".into()) }
        );
        assert_eq!(Decision::from_arguments("not json"), Decision { reason: Reason::Unable, summary: None });
    }

    #[test]
    fn the_note_has_the_reason_the_summary_the_last_ten_actions_and_the_link() {
        let actions: Vec<ActionRecord<'static>> = (0..12)
            .map(|i| ActionRecord {
                title: format!("Click {i}").into(),
                canonical_url: "https://app.example.com/billing".into(),
                timestamp_end: 1000.0 + i as f64,
                ..ActionRecord::default()
            })
            .collect();
        let context = SessionContext { summary: Some("Opened billing\ntwice.".into()), actions };
        let note = note(Reason::Asked, Some("Wants a refund"), Some(&context), "session data", 1071.0);
        assert!(note.starts_with("🤝 Handed over by the bot: the visitor asked to talk to a person."), "{note}");
        assert!(note.contains("What they need: Wants a refund"));
        assert!(note.contains("Latest summary: Opened billing twice."));
        assert!(note.contains("Linked to the visitor's activity by session data."));
        assert!(
            !note.contains("Click 1 on") && note.contains("- Click 2 on https://app.example.com/billing (1 min ago)")
        );
        assert!(note.ends_with("- Click 11 on https://app.example.com/billing (1 min ago)"), "{note}");
        let unlinked = super::note(Reason::Failed, None, None, "nothing", 0.0);
        assert!(unlinked.contains("No activity is linked to this chat"), "{unlinked}");
    }
}
