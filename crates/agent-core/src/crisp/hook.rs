//! Crisp web hook bodies, turned into the few events the product acts on.

use serde_json::Value;

/// A visitor's text message in the chat box of our website: the only thing that starts a reply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VisitorMessage {
    pub website_id: String,
    /// The Crisp conversation id (`session_<uuid>`).
    pub session_id: String,
    pub content: String,
    /// Crisp's message id, unique within a conversation.
    pub fingerprint: Option<u64>,
    /// When the visitor sent it, epoch milliseconds.
    pub timestamp: Option<i64>,
}

/// A message an operator (human or bot) wrote in a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorMessage {
    pub session_id: String,
    pub fingerprint: Option<u64>,
    /// Set by Crisp on bot/automation messages.
    pub automated: bool,
    /// The text, for text messages.
    pub content: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEvent {
    VisitorText(VisitorMessage),
    OperatorText(OperatorMessage),
    /// Well formed, but nothing to do; the reason is for debug logs.
    Ignored(&'static str),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HookError {
    #[error("body is not JSON")]
    NotJson,
    #[error("body is not a JSON object")]
    NotAnObject,
}

/// Parses a hook body and decides what it means for a bot serving `website_id`.
pub fn classify(body: &[u8], website_id: &str) -> Result<HookEvent, HookError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| HookError::NotJson)?;
    let Value::Object(envelope) = value else {
        return Err(HookError::NotAnObject);
    };
    let event = envelope.get("event").and_then(Value::as_str).unwrap_or_default();
    let Some(data) = envelope.get("data").and_then(Value::as_object) else {
        return Ok(HookEvent::Ignored("no data object"));
    };
    let str_field = |name: &str| data.get(name).and_then(Value::as_str);
    let hook_website = str_field("website_id").or_else(|| envelope.get("website_id").and_then(Value::as_str));
    if hook_website.is_some_and(|w| w != website_id) {
        return Ok(HookEvent::Ignored("another website"));
    }
    let Some(session_id) = str_field("session_id").filter(|s| !s.is_empty()) else {
        return Ok(HookEvent::Ignored("event without session_id"));
    };
    let kind = str_field("type").unwrap_or_default();
    let fingerprint = data.get("fingerprint").and_then(Value::as_u64);
    match (event, str_field("from")) {
        ("message:send", Some("user")) => {
            if kind != "text" {
                return Ok(HookEvent::Ignored("not a text message"));
            }
            let Some(content) = str_field("content") else {
                return Ok(HookEvent::Ignored("text message without content"));
            };
            Ok(HookEvent::VisitorText(VisitorMessage {
                website_id: website_id.to_owned(),
                session_id: session_id.to_owned(),
                content: content.to_owned(),
                fingerprint,
                timestamp: data.get("timestamp").and_then(Value::as_i64),
            }))
        }
        // Private notes and system events are not someone talking to the visitor.
        ("message:received" | "message:send", Some("operator")) if !matches!(kind, "note" | "event") => {
            Ok(HookEvent::OperatorText(OperatorMessage {
                session_id: session_id.to_owned(),
                fingerprint,
                automated: data.get("automated").and_then(Value::as_bool).unwrap_or(false),
                content: (kind == "text").then(|| str_field("content").map(str::to_owned)).flatten(),
            }))
        }
        _ => Ok(HookEvent::Ignored("not a message the bot acts on")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WEBSITE: &str = "42286ab3-b29a-4fde-8538-da0ae501d825";
    const SESSION: &str = "session_36ba3566-9651-4790-afc8-ffedbccc317f";

    #[test]
    fn the_docs_example_is_a_visitor_message() {
        let event = classify(include_bytes!("../../tests/fixtures/crisp/message-send-text.json"), WEBSITE).unwrap();
        assert_eq!(
            event,
            HookEvent::VisitorText(VisitorMessage {
                website_id: WEBSITE.into(),
                session_id: SESSION.into(),
                content: "Hey :)".into(),
                fingerprint: Some(150698569649423),
                timestamp: Some(1506985696616),
            })
        );
    }

    #[test]
    fn operator_echo_is_never_a_visitor_message() {
        let event = classify(include_bytes!("../../tests/fixtures/crisp/message-received-operator-echo.json"), WEBSITE)
            .unwrap();
        assert_eq!(
            event,
            HookEvent::OperatorText(OperatorMessage {
                session_id: SESSION.into(),
                fingerprint: Some(170012345999999),
                automated: true,
                content: Some("Hi! How can I help?".into()),
            })
        );
    }

    #[test]
    fn files_other_events_and_other_websites_are_ignored() {
        for body in [
            &include_bytes!("../../tests/fixtures/crisp/message-send-file.json")[..],
            &include_bytes!("../../tests/fixtures/crisp/session-set-email.json")[..],
        ] {
            assert!(matches!(classify(body, WEBSITE), Ok(HookEvent::Ignored(_))));
        }
        let text = include_bytes!("../../tests/fixtures/crisp/message-send-text.json");
        assert_eq!(classify(text, "other-site"), Ok(HookEvent::Ignored("another website")));
        let from_user_with_urn =
            br#"{"event":"message:send","data":{"type":"text","from":"operator","session_id":"s","content":"x"}}"#;
        assert!(matches!(classify(from_user_with_urn, WEBSITE), Ok(HookEvent::OperatorText(_))));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert_eq!(classify(b"not json", WEBSITE), Err(HookError::NotJson));
        assert_eq!(classify(b"[1]", WEBSITE), Err(HookError::NotAnObject));
        assert_eq!(
            classify(br#"{"event":"message:send","data":[]}"#, WEBSITE),
            Ok(HookEvent::Ignored("no data object"))
        );
        assert_eq!(
            classify(br#"{"event":"message:send","data":{"type":"text","from":"user","content":"x"}}"#, WEBSITE),
            Ok(HookEvent::Ignored("event without session_id"))
        );
    }

    proptest! {
        #[test]
        fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = classify(&body, WEBSITE);
        }
    }
}
