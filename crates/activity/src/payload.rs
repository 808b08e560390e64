//! Typed Autoplay stream payloads, parsed with the reference SDK's lenient defaults.
//!
//! `null` or missing fields take their defaults, unknown fields are ignored, and a field of the
//! wrong type makes the whole frame invalid (it is skipped and logged by the caller).
//!
//! Strings borrow from the frame's text (they are copied only when the JSON escapes them), so
//! reading a busy stream allocates little; the product's [`crate::action::ActionRecord`] keeps what it needs.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use std::borrow::Cow;
use std::fmt;

/// One UI action inside an `actions` batch, as the wire carries it: only what the product
/// reads (the rest of the wire's fields are ignored). It is converted once, where a frame is
/// read, into the product's own [`crate::action::ActionRecord`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Action<'a> {
    #[serde(borrow, deserialize_with = "lenient_str")]
    pub title: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "lenient_str")]
    pub description: Cow<'a, str>,
    #[serde(borrow, deserialize_with = "lenient_str")]
    pub canonical_url: Cow<'a, str>,
    #[serde(deserialize_with = "null_as_default")]
    pub index: i64,
    #[serde(rename = "type", borrow, deserialize_with = "lenient_str")]
    pub kind: Cow<'a, str>,
    #[serde(deserialize_with = "null_as_default")]
    pub timestamp_start: f64,
    #[serde(deserialize_with = "null_as_default")]
    pub timestamp_end: f64,
    #[serde(borrow, deserialize_with = "lenient_str")]
    pub raw_url: Cow<'a, str>,
}

/// An `actions` frame: a batch of actions of one session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionsBatch<'a> {
    pub session_id: Option<Cow<'a, str>>,
    pub user_id: Option<Cow<'a, str>>,
    pub actions: Vec<Action<'a>>,
    /// Always `actions.len()`: the wire `count` is reconciled (see [`Parsed::count_mismatch`]).
    pub count: usize,
    pub conversation_id: Option<Cow<'a, str>>,
}

impl ActionsBatch<'_> {
    /// The batch's Autoplay session, `None` for an anonymous batch (no usable session id).
    /// Only a session returned here ever links to activity in a context store.
    pub fn session_key(&self) -> Option<&str> {
        self.session_id.as_deref().and_then(session_key)
    }
}

/// `id` as a session key: trimmed, and `None` when nothing is left or it is a placeholder a
/// client writes for "no session" (`unknown`, `null`, `undefined`, `none`). A visitor can put
/// any id in their chat session data, so no id may name a bucket that anonymous activity
/// shares; every store looks ids up through this.
pub fn session_key(id: &str) -> Option<&str> {
    let id = id.trim();
    let placeholder = ["unknown", "null", "undefined", "none"].iter().any(|p| id.eq_ignore_ascii_case(p));
    (!id.is_empty() && !placeholder).then_some(id)
}

#[derive(Debug, Clone, PartialEq)]
pub enum StreamPayload<'a> {
    Actions(ActionsBatch<'a>),
    /// A connector-side summary (the listener writes its own).
    Summary,
    UsertourTrigger,
    /// A `type` this product does not know; ignored.
    Unknown(String),
}

/// A parsed frame, plus what the parser had to correct.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed<'a> {
    pub payload: StreamPayload<'a>,
    /// `Some(wire_count)` when an actions batch's `count` disagreed with its actions.
    pub count_mismatch: Option<i64>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PayloadError {
    #[error("not a JSON object")]
    NotAnObject,
    #[error("invalid payload: {0}")]
    Invalid(String),
    #[error("payload without a \"type\" field")]
    MissingType,
}

/// Every field any known payload type carries; one pass of serde over the frame. Fields the
/// product does not read are still parsed, so a frame with one of them ill-typed is skipped
/// as the reference SDK would.
#[derive(Deserialize, Default)]
#[serde(default)]
struct WireFrame<'a> {
    #[serde(rename = "type", borrow, deserialize_with = "optional_str")]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "product_id", borrow, deserialize_with = "optional_str")]
    _product_id: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "optional_str")]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "optional_str")]
    user_id: Option<Cow<'a, str>>,
    #[serde(rename = "email", borrow, deserialize_with = "optional_str")]
    _email: Option<Cow<'a, str>>,
    #[serde(borrow)]
    actions: Option<Vec<Action<'a>>>,
    count: Option<i64>,
    #[serde(rename = "forwarded_at")]
    _forwarded_at: Option<f64>,
    #[serde(borrow, deserialize_with = "optional_str")]
    conversation_id: Option<Cow<'a, str>>,
    #[serde(rename = "summary", borrow, deserialize_with = "optional_str")]
    _summary: Option<Cow<'a, str>>,
    #[serde(rename = "replaces")]
    _replaces: Option<i64>,
}

/// Parses the `data` of one SSE frame.
pub fn parse_payload(data: &str) -> Result<Parsed<'_>, PayloadError> {
    // serde would also read a JSON array into a struct; only objects are payloads.
    if !data.trim_start().starts_with('{') {
        return Err(PayloadError::NotAnObject);
    }
    let wire: WireFrame = serde_json::from_str(data).map_err(|e| PayloadError::Invalid(e.to_string()))?;
    let kind = wire.kind.ok_or(PayloadError::MissingType)?;
    fn falsy_none(s: Option<Cow<'_, str>>) -> Option<Cow<'_, str>> {
        s.filter(|s| !s.is_empty())
    }
    let payload = match &*kind {
        "actions" => {
            let actions = wire.actions.unwrap_or_default();
            let wire_count = wire.count.unwrap_or(0);
            let count_mismatch = (usize::try_from(wire_count).ok() != Some(actions.len())).then_some(wire_count);
            return Ok(Parsed {
                payload: StreamPayload::Actions(ActionsBatch {
                    session_id: falsy_none(wire.session_id),
                    user_id: falsy_none(wire.user_id),
                    count: actions.len(),
                    actions,
                    conversation_id: falsy_none(wire.conversation_id),
                }),
                count_mismatch,
            });
        }
        "summary" => StreamPayload::Summary,
        "usertour_trigger" => StreamPayload::UsertourTrigger,
        _ => StreamPayload::Unknown(kind.into_owned()),
    };
    Ok(Parsed { payload, count_mismatch: None })
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A string that borrows from the input when it can (serde's own `Cow<str>` always copies).
struct BorrowedStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for BorrowedStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = BorrowedStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// A string field where `null` reads as empty.
fn lenient_str<'de: 'a, 'a, D: Deserializer<'de>>(deserializer: D) -> Result<Cow<'a, str>, D::Error> {
    Ok(optional_str(deserializer)?.unwrap_or_default())
}

/// An optional string field (`null` is `None`).
fn optional_str<'de: 'a, 'a, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(Option::<BorrowedStr<'de>>::deserialize(deserializer)?.map(|s| s.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data_line(sse: &str) -> &str {
        sse.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()
    }

    fn actions(parsed: Parsed<'_>) -> ActionsBatch<'_> {
        match parsed.payload {
            StreamPayload::Actions(batch) => batch,
            other => panic!("expected actions, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_full_actions_fixture() {
        let data = data_line(include_str!("../../../tests/fixtures/autoplay/actions-full.sse"));
        let parsed = parse_payload(data).unwrap();
        assert_eq!(parsed.count_mismatch, None);
        let batch = actions(parsed);
        assert_eq!(batch.session_id.as_deref(), Some("ps_abc123"));
        assert_eq!(batch.user_id.as_deref(), Some("distinct_id_xyz"));
        assert_eq!(batch.count, 3);
        let first = &batch.actions[0];
        assert_eq!(first.title, "Page Load: Dashboard");
        assert_eq!(first.kind, "pageview");
        assert_eq!(first.raw_url, "https://app.example.com/dashboard?ref=email");
        assert_eq!(first.timestamp_end, 1700000005.2);
        assert_eq!(
            crate::action::ActionRecord::from_wire(first).to_text(),
            "[0] pageview: User landed on the dashboard page \u{2014} https://app.example.com/dashboard"
        );
    }

    #[test]
    fn legacy_batches_take_the_sdk_defaults_and_reconcile_count() {
        let data = data_line(include_str!("../../../tests/fixtures/autoplay/actions-legacy-minimal.sse"));
        let parsed = parse_payload(data).unwrap();
        assert_eq!(parsed.count_mismatch, Some(1));
        let batch = actions(parsed);
        assert_eq!((batch.session_id, batch.user_id), (None, None));
        assert_eq!(batch.count, 2);
        assert_eq!(batch.actions[1].index, 0);
        assert_eq!(batch.actions[1].kind, "");
        assert_eq!(batch.actions[1].raw_url, "");
        assert_eq!(
            crate::action::ActionRecord::from_wire(&batch.actions[1]).to_text(),
            "[0] : User landed on /checkout/payment \u{2014} /checkout/payment"
        );
    }

    #[test]
    fn strings_borrow_from_the_frame_unless_escaped() {
        let data = r#"{"type":"actions","session_id":"ps_1","actions":[{"title":"plain","description":"caf\u00e9 \"quoted\""}]}"#;
        let batch = actions(parse_payload(data).unwrap());
        assert!(matches!(batch.session_id, Some(Cow::Borrowed("ps_1"))));
        assert!(matches!(batch.actions[0].title, Cow::Borrowed("plain")));
        assert!(matches!(&batch.actions[0].description, Cow::Owned(s) if s == "caf\u{e9} \"quoted\""));
        let owned = crate::action::ActionRecord::from_wire(&batch.actions[0]).into_owned();
        assert_eq!(owned.description, batch.actions[0].description);
    }

    #[test]
    fn empty_strings_and_nulls_become_defaults() {
        let batch = actions(
            parse_payload(
                r#"{"type":"actions","session_id":"","product_id":null,"actions":null,"count":null,"extra":{"x":1}}"#,
            )
            .unwrap(),
        );
        assert_eq!(batch.session_id, None);
        assert_eq!(batch.session_key(), None);
        assert!(batch.actions.is_empty());
    }

    #[test]
    fn only_a_real_session_id_is_a_session_key() {
        fn with(id: Option<&str>) -> ActionsBatch<'_> {
            ActionsBatch { session_id: id.map(Cow::Borrowed), ..ActionsBatch::default() }
        }
        for id in
            [None, Some(""), Some("  "), Some("\t\n"), Some("unknown"), Some("null"), Some(" NULL "), Some("undefined")]
        {
            assert_eq!(with(id).session_key(), None, "{id:?}");
        }
        assert_eq!(with(Some("ps_1")).session_key(), Some("ps_1"));
        assert_eq!(with(Some(" ps_1\n")).session_key(), Some("ps_1"));
        assert_eq!(session_key("unknown_1"), Some("unknown_1"));
    }

    #[test]
    fn other_types_are_recognised() {
        let summary = data_line(include_str!("../../../tests/fixtures/autoplay/summary.sse"));
        assert_eq!(parse_payload(summary).unwrap().payload, StreamPayload::Summary);
        // Its fields are checked as the SDK checks them: an ill-typed one skips the frame.
        assert!(matches!(parse_payload(r#"{"type":"summary","replaces":"x"}"#), Err(PayloadError::Invalid(_))));
        assert_eq!(
            parse_payload(r#"{"type":"usertour_trigger","flow_id":"f"}"#).unwrap().payload,
            StreamPayload::UsertourTrigger
        );
        assert_eq!(
            parse_payload(r#"{"type":"new_thing"}"#).unwrap().payload,
            StreamPayload::Unknown("new_thing".into())
        );
    }

    #[test]
    fn rejects_non_objects_bad_json_and_ill_typed_fields() {
        assert_eq!(parse_payload("[1,2,3]"), Err(PayloadError::NotAnObject));
        assert_eq!(parse_payload("null"), Err(PayloadError::NotAnObject));
        assert_eq!(parse_payload("not-json"), Err(PayloadError::NotAnObject));
        assert!(matches!(parse_payload("{not json"), Err(PayloadError::Invalid(_))));
        assert!(matches!(parse_payload(r#"{"type":"actions","actions":[1]}"#), Err(PayloadError::Invalid(_))));
        assert!(matches!(parse_payload(r#"{"type":"actions","count":"3"}"#), Err(PayloadError::Invalid(_))));
        assert_eq!(parse_payload(r#"{"session_id":"x"}"#), Err(PayloadError::MissingType));
    }

    proptest! {
        #[test]
        fn random_text_never_panics(s in ".{0,300}") {
            let _ = parse_payload(&s);
        }

        #[test]
        fn random_json_objects_never_panic(
            title in proptest::option::of(".{0,20}"),
            count in proptest::option::of(any::<i64>()),
            index in any::<i64>(),
        ) {
            let body = serde_json::json!({"type":"actions","count":count,"actions":[{"title":title,"index":index}]});
            let body = body.to_string();
            let batch = actions(parse_payload(&body).unwrap());
            prop_assert_eq!(batch.count, 1);
        }
    }
}
