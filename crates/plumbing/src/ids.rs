//! Ids as types: each id the product handles (a Crisp conversation, an Autoplay session, a
//! website...) is a newtype made by [`id_type!`], validated where it enters (a hook, an MCP
//! call, a setting, the stream), so one cannot be passed where another is expected.

/// An id that failed its check where it entered: which kind of id, and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind}: {rule}")]
pub struct IdError {
    pub kind: &'static str,
    pub rule: &'static str,
}

/// Longest id accepted anywhere (Crisp's are about 45 bytes).
pub const MAX_ID_LEN: usize = 256;

/// An id usable as a path segment and a key: 1 to [`MAX_ID_LEN`] bytes, not `.` or `..`, no
/// `/ \ ? # %`, no whitespace or control characters.
pub fn is_plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id != "."
        && id != ".."
        && !id.chars().any(|c| matches!(c, '/' | '\\' | '?' | '#' | '%') || c.is_whitespace() || c.is_control())
}

/// The rule [`is_plain_id`] checks, as an error names it.
pub const PLAIN_ID_RULE: &str = "1 to 256 bytes, no whitespace, control characters or any of / \\ ? # %, not . or ..";

/// Defines a string id newtype: `$check` (a `fn(&str) -> bool`) decides what is valid and
/// `$rule` says it. The type is built only by `parse` (or serde, through the same check), shows
/// as its text, and compares with `&str` (for tests and logs); it never derefs to `&str`, so a
/// `&str` or another id cannot stand in for it.
#[macro_export]
macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $check:expr, $rule:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `id` where it enters the product.
            pub fn parse(id: impl Into<String>) -> Result<Self, $crate::ids::IdError> {
                let id = id.into();
                let check: fn(&str) -> bool = $check;
                if check(&id) { Ok(Self(id)) } else { Err($crate::ids::IdError { kind: $kind, rule: $rule }) }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::ids::IdError;
            fn try_from(id: String) -> Result<Self, Self::Error> {
                Self::parse(id)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = $crate::ids::IdError;
            fn try_from(id: &str) -> Result<Self, Self::Error> {
                Self::parse(id)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::id_type!(
        /// A test id.
        TestId,
        "test id",
        is_plain_id,
        PLAIN_ID_RULE
    );

    #[test]
    fn an_id_is_made_only_through_its_check() {
        assert_eq!(TestId::parse("session_1").unwrap().as_str(), "session_1");
        for bad in ["", ".", "..", "a/b", "a b", "a\nb", "a%2f", &"x".repeat(MAX_ID_LEN + 1)] {
            let e = TestId::parse(bad).unwrap_err();
            assert_eq!(e.kind, "test id", "{bad:?}");
        }
        let e: Result<TestId, _> = serde_json::from_str("\"a/b\"");
        assert!(e.is_err(), "serde goes through the same check");
        let id: TestId = serde_json::from_str("\"session_1\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"session_1\"");
        assert_eq!(format!("{id} {id:?}"), "session_1 TestId(\"session_1\")");
    }
}
