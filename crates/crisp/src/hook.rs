//! Crisp web hook bodies, turned into the few events the product acts on.

use crate::ids::{ConversationId, Fingerprint, WebsiteId};
use std::borrow::Cow;

/// A visitor's text message in the chat box of our website: the only thing that starts a reply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VisitorMessage {
    pub website_id: WebsiteId,
    /// The Crisp conversation.
    pub session_id: ConversationId,
    pub content: String,
    /// Crisp's message id, unique within a conversation.
    pub fingerprint: Option<Fingerprint>,
    /// When the visitor sent it, epoch milliseconds.
    pub timestamp: Option<i64>,
}

/// A message an operator (human or bot) wrote in a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorMessage {
    pub session_id: ConversationId,
    pub fingerprint: Option<Fingerprint>,
    /// Set by Crisp on bot/automation messages.
    pub automated: bool,
    /// The text, for text messages.
    pub content: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEvent {
    VisitorText(VisitorMessage),
    OperatorText(OperatorMessage),
    /// An operator resolved the conversation (`session:set_state` to `resolved`): the bot may
    /// speak there again.
    Resolved {
        session_id: ConversationId,
    },
    /// The widget set session data (`session:set_data`): it may link the conversation to an
    /// Autoplay session before the visitor writes anything.
    SessionData {
        session_id: ConversationId,
        data: super::SessionData,
    },
    /// Well formed, but nothing to do; the reason is for debug logs.
    Ignored(&'static str),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HookError {
    #[error("body is not JSON")]
    NotJson,
    #[error("body is not a JSON object")]
    NotAnObject,
    /// An id that would not be one plain segment of a Crisp REST path.
    #[error("{field} is not a valid Crisp id")]
    InvalidId { field: &'static str },
}

pub use plumbing::ids::{MAX_ID_LEN, is_plain_id};

/// An id as it may appear in a log line: at most 100 characters.
pub fn id_for_log(id: &str) -> &str {
    id.char_indices().nth(100).map_or(id, |(end, _)| &id[..end])
}

/// The fields of a hook the bot reads. Every field is lenient: a value of another JSON type
/// reads as absent, so any JSON object is a well-formed hook. Strings borrow from the body
/// where they can; everything else is skipped without being built.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Lenient<Cow<'a, str>>,
    #[serde(borrow)]
    website_id: Lenient<Cow<'a, str>>,
    #[serde(borrow)]
    data: Lenient<Data<'a>>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Data<'a> {
    #[serde(borrow)]
    website_id: Lenient<Cow<'a, str>>,
    #[serde(borrow)]
    session_id: Lenient<Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    kind: Lenient<Cow<'a, str>>,
    #[serde(borrow)]
    from: Lenient<Cow<'a, str>>,
    #[serde(borrow)]
    content: Lenient<Cow<'a, str>>,
    fingerprint: Lenient<u64>,
    timestamp: Lenient<i64>,
    automated: Lenient<bool>,
    #[serde(borrow)]
    state: Lenient<Cow<'a, str>>,
    /// `session:set_data`: the session data set.
    data: Lenient<serde_json::Map<String, serde_json::Value>>,
}

/// The same fields read strictly, for the common case of a hook of the expected shape: one
/// pass over the body instead of two for every value. Any value of another type fails it, and
/// the body is read again as an [`Envelope`].
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct StrictEnvelope<'a> {
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    website_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<ObjectOnly<StrictData<'a>>>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct StrictData<'a> {
    #[serde(borrow)]
    website_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    session_id: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    from: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    fingerprint: Option<u64>,
    timestamp: Option<i64>,
    automated: Option<bool>,
    #[serde(borrow)]
    state: Option<Cow<'a, str>>,
    data: Option<serde_json::Map<String, serde_json::Value>>,
}

impl<'a> From<StrictEnvelope<'a>> for Envelope<'a> {
    fn from(e: StrictEnvelope<'a>) -> Self {
        let data = e.data.map(|ObjectOnly(d)| Data {
            website_id: Lenient(d.website_id),
            session_id: Lenient(d.session_id),
            kind: Lenient(d.kind),
            from: Lenient(d.from),
            content: Lenient(d.content),
            fingerprint: Lenient(d.fingerprint),
            timestamp: Lenient(d.timestamp),
            automated: Lenient(d.automated),
            state: Lenient(d.state),
            data: Lenient(d.data),
        });
        Envelope { event: Lenient(e.event), website_id: Lenient(e.website_id), data: Lenient(data) }
    }
}

/// A struct read from a JSON object only (serde would also read one from an array).
struct ObjectOnly<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData)).map(ObjectOnly)
    }
}

/// `Some` when the JSON value has the expected type, `None` for any other value.
pub(crate) struct Lenient<T>(pub(crate) Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Lenient(None)
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Lenient<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Borrow the raw JSON of this one value, then try the wanted type on it; a mismatch
        // leaves the rest of the body unaffected.
        let raw: &'de serde_json::value::RawValue = serde::Deserialize::deserialize(deserializer)?;
        // serde would read a struct from an array too; no field here is ever an array.
        if raw.get().starts_with('[') {
            return Ok(Lenient(None));
        }
        Ok(Lenient(serde_json::from_str(raw.get()).ok()))
    }
}

/// Parses a hook body and decides what it means for a bot serving `website_id`.
pub fn classify(body: &[u8], website_id: &WebsiteId) -> Result<HookEvent, HookError> {
    let text = std::str::from_utf8(body).map_err(|_| HookError::NotJson)?;
    if !text.trim_start().starts_with('{') {
        // Valid JSON of another kind is "not an object"; anything else is not JSON at all.
        return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => Err(HookError::NotAnObject),
            Err(_) => Err(HookError::NotJson),
        };
    }
    let envelope: Envelope<'_> = match serde_json::from_str::<StrictEnvelope<'_>>(text) {
        Ok(strict) => strict.into(),
        Err(_) => serde_json::from_str(text).map_err(|_| HookError::NotJson)?,
    };
    decide(envelope, website_id)
}

/// What a hook means for a bot serving `website_id`.
fn decide(envelope: Envelope<'_>, website_id: &WebsiteId) -> Result<HookEvent, HookError> {
    let event = envelope.event.0.as_deref().unwrap_or_default();
    let Some(data) = envelope.data.0 else {
        return Ok(HookEvent::Ignored("no data object"));
    };
    // Ids end up in REST paths and logs: anything but a plain segment is refused outright.
    for (field, id) in [
        ("website_id", envelope.website_id.0.as_deref()),
        ("data.website_id", data.website_id.0.as_deref()),
        ("data.session_id", data.session_id.0.as_deref()),
    ] {
        if id.is_some_and(|id| !is_plain_id(id)) {
            return Err(HookError::InvalidId { field });
        }
    }
    let hook_website = data.website_id.0.as_deref().or(envelope.website_id.0.as_deref());
    if hook_website.is_some_and(|w| w != website_id.as_str()) {
        return Ok(HookEvent::Ignored("another website"));
    }
    let Some(session_id) = data.session_id.0.as_deref() else {
        return Ok(HookEvent::Ignored("event without session_id"));
    };
    let session_id =
        ConversationId::parse(session_id).map_err(|_| HookError::InvalidId { field: "data.session_id" })?;
    let kind = data.kind.0.as_deref().unwrap_or_default();
    let fingerprint = data.fingerprint.0.map(Fingerprint::from_wire);
    if event == "session:set_data" {
        return Ok(match data.data.0 {
            Some(fields) => HookEvent::SessionData {
                session_id: session_id.clone(),
                data: super::SessionData::from_object(&fields),
            },
            None => HookEvent::Ignored("session data that is not an object"),
        });
    }
    if event == "session:set_state" {
        return Ok(match data.state.0.as_deref() {
            Some("resolved") => HookEvent::Resolved { session_id: session_id.clone() },
            _ => HookEvent::Ignored("conversation state other than resolved"),
        });
    }
    Ok(match (event, data.from.0.as_deref()) {
        ("message:send", Some("user")) => {
            if kind != "text" {
                return Ok(HookEvent::Ignored("not a text message"));
            }
            let Some(content) = data.content.0 else {
                return Ok(HookEvent::Ignored("text message without content"));
            };
            HookEvent::VisitorText(VisitorMessage {
                website_id: website_id.clone(),
                session_id: session_id.clone(),
                content: content.into_owned(),
                fingerprint,
                timestamp: data.timestamp.0,
            })
        }
        // Private notes and system events are not someone talking to the visitor.
        ("message:received" | "message:send", Some("operator")) if !matches!(kind, "note" | "event") => {
            HookEvent::OperatorText(OperatorMessage {
                session_id: session_id.clone(),
                fingerprint,
                automated: data.automated.0.unwrap_or(false),
                content: if kind == "text" { data.content.0.map(Cow::into_owned) } else { None },
            })
        }
        _ => HookEvent::Ignored("not a message the bot acts on"),
    })
}

#[cfg(test)]
mod tests {
    fn website() -> WebsiteId {
        WebsiteId::parse(WEBSITE).unwrap()
    }

    use super::*;
    use proptest::prelude::*;

    const WEBSITE: &str = "42286ab3-b29a-4fde-8538-da0ae501d825";
    const SESSION: &str = "session_36ba3566-9651-4790-afc8-ffedbccc317f";

    #[test]
    fn the_docs_example_is_a_visitor_message() {
        let event =
            classify(include_bytes!("../../../tests/fixtures/crisp/message-send-text.json"), &website()).unwrap();
        assert_eq!(
            event,
            HookEvent::VisitorText(VisitorMessage {
                website_id: website(),
                session_id: ConversationId::parse(SESSION).unwrap(),
                content: "Hey :)".into(),
                fingerprint: Some(Fingerprint::from_wire(150698569649423)),
                timestamp: Some(1506985696616),
            })
        );
    }

    #[test]
    fn operator_echo_is_never_a_visitor_message() {
        let event =
            classify(include_bytes!("../../../tests/fixtures/crisp/message-received-operator-echo.json"), &website())
                .unwrap();
        assert_eq!(
            event,
            HookEvent::OperatorText(OperatorMessage {
                session_id: ConversationId::parse(SESSION).unwrap(),
                fingerprint: Some(Fingerprint::from_wire(170012345999999)),
                automated: true,
                content: Some("Hi! How can I help?".into()),
            })
        );
    }

    #[test]
    fn session_data_links_before_the_first_word() {
        let event =
            classify(include_bytes!("../../../tests/fixtures/crisp/session-set-data.json"), &website()).unwrap();
        let HookEvent::SessionData { session_id, data } = event else { panic!("{event:?}") };
        assert_eq!(session_id, SESSION);
        assert_eq!(data.get("autoplay_session_id"), Some("ps_abc123"));
        assert_eq!(data.get("seats"), Some("12"));
        assert_eq!(data.get("beta"), None, "booleans are no link");
        let not_an_object = br#"{"event":"session:set_data","data":{"session_id":"s","data":"x"}}"#;
        assert!(matches!(classify(not_an_object, &website()), Ok(HookEvent::Ignored(_))));
    }

    #[test]
    fn files_other_events_and_other_websites_are_ignored() {
        for body in [
            &include_bytes!("../../../tests/fixtures/crisp/message-send-file.json")[..],
            &include_bytes!("../../../tests/fixtures/crisp/session-set-email.json")[..],
        ] {
            assert!(matches!(classify(body, &website()), Ok(HookEvent::Ignored(_))));
        }
        let text = include_bytes!("../../../tests/fixtures/crisp/message-send-text.json");
        assert_eq!(classify(text, &WebsiteId::parse("other-site").unwrap()), Ok(HookEvent::Ignored("another website")));
        let from_user_with_urn =
            br#"{"event":"message:send","data":{"type":"text","from":"operator","session_id":"s","content":"x"}}"#;
        assert!(matches!(classify(from_user_with_urn, &website()), Ok(HookEvent::OperatorText(_))));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert_eq!(classify(b"not json", &website()), Err(HookError::NotJson));
        assert_eq!(classify(b"[1]", &website()), Err(HookError::NotAnObject));
        assert_eq!(
            classify(br#"{"event":"message:send","data":[]}"#, &website()),
            Ok(HookEvent::Ignored("no data object"))
        );
        assert_eq!(
            classify(br#"{"event":"message:send","data":{"type":"text","from":"user","content":"x"}}"#, &website()),
            Ok(HookEvent::Ignored("event without session_id"))
        );
    }

    #[test]
    fn resolving_a_conversation_is_an_event_of_its_own() {
        let hook = |state: &str| {
            serde_json::json!({"event": "session:set_state", "website_id": WEBSITE,
                "data": {"website_id": WEBSITE, "session_id": SESSION, "state": state}})
            .to_string()
        };
        assert_eq!(
            classify(hook("resolved").as_bytes(), &website()),
            Ok(HookEvent::Resolved { session_id: ConversationId::parse(SESSION).unwrap() })
        );
        assert!(matches!(classify(hook("unresolved").as_bytes(), &website()), Ok(HookEvent::Ignored(_))));
    }

    #[test]
    fn ids_that_are_not_a_plain_path_segment_are_refused() {
        let long = "s".repeat(MAX_ID_LEN + 1);
        for bad in ["", ".", "..", "a/b", "a\\b", "a?b", "a#b", "a b", " ", "a\tb", "a\u{0}b", "%2e%2e", long.as_str()]
        {
            let session = serde_json::json!({"event": "message:send", "data": {
                "website_id": WEBSITE, "session_id": bad, "type": "text", "from": "user", "content": "hi"}});
            assert_eq!(
                classify(session.to_string().as_bytes(), &website()),
                Err(HookError::InvalidId { field: "data.session_id" }),
                "session_id {bad:?}"
            );
            let body = serde_json::json!({"event": "message:send", "website_id": bad, "data": {
                "session_id": SESSION, "type": "text", "from": "user", "content": "hi"}});
            assert_eq!(
                classify(body.to_string().as_bytes(), &website()),
                Err(HookError::InvalidId { field: "website_id" }),
                "website_id {bad:?}"
            );
        }
        assert!(is_plain_id(SESSION) && is_plain_id(WEBSITE) && is_plain_id(&"s".repeat(MAX_ID_LEN)));
    }

    #[test]
    fn ids_in_logs_are_cut_to_100_characters() {
        assert_eq!(id_for_log(&"é".repeat(300)).chars().count(), 100);
        assert_eq!(id_for_log(SESSION), SESSION);
    }

    /// Hook-like bodies whose fields take values of every JSON type.
    fn hook_like() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("12".to_owned()),
            Just("-3.5".to_owned()),
            Just("[]".to_owned()),
            Just("[\"a\",\"b\"]".to_owned()),
            Just("{}".to_owned()),
            Just("\"text\"".to_owned()),
            Just("\"user\"".to_owned()),
            Just("\"operator\"".to_owned()),
            Just("\"message:send\"".to_owned()),
            Just("\"session:set_state\"".to_owned()),
            Just("\"resolved\"".to_owned()),
            Just(format!("\"{WEBSITE}\"")),
            Just(format!("\"{SESSION}\"")),
            Just("\"..\"".to_owned()),
            Just("\"\"".to_owned()),
        ];
        let field = |names: &'static [&'static str]| (proptest::sample::select(names), value.clone());
        const DATA_FIELDS: &[&str] =
            &["website_id", "session_id", "type", "from", "content", "fingerprint", "timestamp", "automated", "state"];
        let data = proptest::collection::vec(field(DATA_FIELDS), 0..9).prop_map(|fields| {
            let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", body.join(","))
        });
        let data = prop_oneof![data, value.clone()];
        (proptest::collection::vec(field(&["event", "website_id", "extra"]), 0..4), proptest::option::of(data))
            .prop_map(|(fields, data)| {
                let mut body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                body.extend(data.map(|d| format!("\"data\":{d}")));
                format!("{{{}}}", body.join(","))
            })
    }

    proptest! {
        #[test]
        fn the_strict_fast_path_decides_as_the_lenient_reading(body in hook_like()) {
            // (A repeated field makes both readings fail: the body is then not a hook.)
            let lenient = serde_json::from_str::<Envelope<'_>>(&body).map(|e| decide(e, &website()));
            prop_assert_eq!(
                classify(body.as_bytes(), &website()),
                lenient.map_err(|_| HookError::NotJson).and_then(|decided| decided)
            );
        }

        #[test]
        fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = classify(&body, &website());
        }
    }
}
