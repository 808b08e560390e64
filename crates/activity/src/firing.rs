//! A proactive trigger's firing, as the context store records it: the record the listener's
//! triggers (crate `proactive`) write and the webhook's offers read. It lives here, with the
//! stores that keep it, so the stores need nothing above them.

use serde::{Deserialize, Serialize};

/// The firings file under `DATA_DIR`, appended by the listener and read by the webhook.
pub const FIRINGS_FILE: &str = "proactive.firings";
/// The Redis stream of firings (one field, `f`, the firing as JSON).
pub const REDIS_FIRINGS_STREAM: &str = "proactive:firings";
/// Firings kept in the Redis stream, about (`XADD … MAXLEN ~`).
pub const REDIS_FIRINGS_MAXLEN: usize = 10_000;

/// What made the listener think a visitor is stuck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Back and forth between two pages.
    PingPong,
    /// A long time on one page with few actions.
    Dwell,
    /// The same action on the same page again and again (rage clicks, a button that does nothing).
    Repeat,
    /// A page whose URL or title looks like an error.
    ErrorPage,
}

impl Trigger {
    pub const ALL: [Trigger; 4] = [Trigger::PingPong, Trigger::Dwell, Trigger::Repeat, Trigger::ErrorPage];

    /// The name used in `PROACTIVE_TRIGGERS`, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::PingPong => "ping_pong",
            Trigger::Dwell => "dwell",
            Trigger::Repeat => "repeat",
            Trigger::ErrorPage => "error_page",
        }
    }

    pub fn parse(name: &str) -> Option<Trigger> {
        Trigger::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(name.trim()))
    }

    /// Parses `PROACTIVE_TRIGGERS` (`ping_pong,dwell,repeat`): empty means off.
    pub fn parse_list(list: &str) -> Result<Vec<Trigger>, String> {
        let mut triggers = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let trigger = Trigger::parse(name)
                .ok_or_else(|| format!("unknown trigger {name:?} (known: ping_pong, dwell, repeat, error_page)"))?;
            if !triggers.contains(&trigger) {
                triggers.push(trigger);
            }
        }
        Ok(triggers)
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One trigger firing for one Autoplay session: what the webhook needs to decide and to write
/// the offer. Its `id` is the same in every listener that sees the same stream (made from the
/// session, the trigger and the time of the action that fired it), so a firing recorded twice
/// is offered once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firing {
    pub id: String,
    pub trigger: Trigger,
    pub session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// When it fired, Unix seconds (the stream's clock when an action fired it).
    pub at: f64,
    /// The page it is about (canonical URL).
    #[serde(default)]
    pub page: String,
    /// One line for the LLM and the operator: what the visitor did.
    #[serde(default)]
    pub detail: String,
    /// When the listener recorded it, Unix seconds of the listener's clock (0: unknown): the
    /// webhook drops firings too old to be worth an offer.
    #[serde(default)]
    pub recorded_at: f64,
}

/// The wall clock in Unix seconds: the time of gate records and firings.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Untrusted text (from the stream, or a model) as one line of at most `max` characters: line
/// breaks and other control characters become spaces, so it cannot start a line of its own in
/// a prompt or a log.
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::new();
    push_one_line(text, max, &mut out);
    out
}

/// [`one_line`] into `out` (cleared first), reusing its buffer.
pub fn push_one_line(text: &str, max: usize, out: &mut String) {
    out.clear();
    // The common case, short printable ASCII (a URL), is one copy.
    if text.len() <= max && text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        out.push_str(text);
        return;
    }
    out.extend(
        text.chars().take(max).map(|c| if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') { ' ' } else { c }),
    );
}

/// Longest `detail` and `page` a firing carries (they come from the stream, and end up in a
/// prompt).
pub const MAX_FIRING_TEXT: usize = 300;
