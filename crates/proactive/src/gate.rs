//! The gate that keeps proactive offers from nagging: one small record per visitor (Crisp
//! conversation) and the rules that read it. Pure: every function takes the time, so the rules
//! are tested without a clock, and the record is plain data kept by [`super::book`] (memory and
//! a file, or Redis).
//!
//! A visitor moves idle → offered → engaged (they wrote back) or dismissed (they did not,
//! within [`DISMISS_AFTER_SECS`]); each dismissal doubles the cooldown before the next offer.

use super::Trigger;
use serde::{Deserialize, Serialize};

/// An offer left unanswered this long counts as dismissed.
pub const DISMISS_AFTER_SECS: f64 = 120.0;
/// No offer within this long of the last message from either side.
pub const QUIET_AFTER_MESSAGE_SECS: f64 = 120.0;
/// A visitor message this soon after an offer is an answer to it (`proactive_engaged_total`).
pub const ENGAGED_WITHIN_SECS: f64 = 600.0;
/// Dismissals beyond this no longer lengthen the cooldown (64 × the cooldown).
const MAX_DOUBLINGS: u32 = 6;

/// The gate's settings.
#[derive(Debug, Clone, Copy)]
pub struct GateSettings {
    /// Seconds between two offers to one visitor, before dismissals double it.
    pub cooldown_secs: f64,
    /// Offers per Autoplay session.
    pub max_offers: u32,
}

/// Why an offer was not sent; with [`Outcome`] these are the values of
/// `proactive_offers_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppressed {
    /// Too soon after the last offer.
    Cooldown,
    /// A human operator has the conversation, or it was handed over.
    Human,
    /// The bot is answering, or someone wrote less than two minutes ago.
    Busy,
    /// No Crisp conversation is linked to the Autoplay session.
    Unlinked,
    /// The visitor's offers, or the site's offers this minute, are used up.
    Capped,
}

/// What became of a firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// The model judged the visitor fine.
    Declined,
    Suppressed(Suppressed),
    /// The offer could not be delivered.
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Sent,
        Outcome::Declined,
        Outcome::Suppressed(Suppressed::Cooldown),
        Outcome::Suppressed(Suppressed::Human),
        Outcome::Suppressed(Suppressed::Busy),
        Outcome::Suppressed(Suppressed::Unlinked),
        Outcome::Suppressed(Suppressed::Capped),
        Outcome::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Declined => "declined",
            Outcome::Suppressed(Suppressed::Cooldown) => "cooldown",
            Outcome::Suppressed(Suppressed::Human) => "human",
            Outcome::Suppressed(Suppressed::Busy) => "busy",
            Outcome::Suppressed(Suppressed::Unlinked) => "unlinked",
            Outcome::Suppressed(Suppressed::Capped) => "capped",
            Outcome::Failed => "failed",
        }
    }
}

pub use crisp::Floor;

/// How an offer went for the visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferState {
    /// Sent, no answer yet.
    Offered,
    /// The visitor wrote within [`ENGAGED_WITHIN_SECS`].
    Engaged,
    /// No answer within [`DISMISS_AFTER_SECS`].
    Dismissed,
}

/// The last offer made to a visitor: what the reply's prompt says when they answer it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    /// Unix seconds.
    pub at: f64,
    pub trigger: Trigger,
    pub firing_id: String,
    /// What the visitor did (the firing's detail).
    pub detail: String,
    pub state: OfferState,
}

/// One visitor's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VisitorGate {
    /// The Autoplay session the offers below were counted for.
    #[serde(default)]
    pub autoplay_session: String,
    #[serde(default)]
    pub offers: u32,
    #[serde(default)]
    pub dismissals: u32,
    #[serde(default)]
    pub last_offer: Option<Offer>,
    /// The conversation was handed over to a human: no offers there any more.
    #[serde(default)]
    pub handed_off: bool,
    /// When the visitor last wrote, as far as this record knows (Unix seconds): the quiet
    /// rule's fallback when Crisp cannot list the conversation's messages.
    #[serde(default)]
    pub visitor_wrote_at: Option<f64>,
}

impl VisitorGate {
    /// Counts an unanswered offer as dismissed once its time is up.
    pub fn settle(&mut self, now: f64) {
        if let Some(offer) = &mut self.last_offer
            && offer.state == OfferState::Offered
            && now - offer.at >= DISMISS_AFTER_SECS
        {
            offer.state = OfferState::Dismissed;
            self.dismissals += 1;
        }
    }

    /// The seconds to wait after the last offer: the cooldown, doubled per dismissal.
    pub fn cooldown_secs(&self, settings: &GateSettings) -> f64 {
        settings.cooldown_secs * f64::from(1u32 << self.dismissals.min(MAX_DOUBLINGS))
    }

    /// Whether an offer may go to this visitor now, for a firing of `autoplay_session`; the
    /// first reason that holds it back otherwise. The site-wide cap is the caller's, checked
    /// last since it uses up a slot.
    pub fn check(
        &mut self,
        now: f64,
        autoplay_session: &str,
        floor: &Floor,
        settings: &GateSettings,
    ) -> Result<(), Suppressed> {
        self.settle(now);
        // The count is the conversation's, whatever Autoplay sessions its firings came from
        // (alternating sessions must not reset it); each session has a count of its own too
        // ([`Self::check_session`]).
        self.autoplay_session = autoplay_session.to_owned();
        if floor.human || self.handed_off {
            return Err(Suppressed::Human);
        }
        let recent_message = floor.last_message_at.is_some_and(|at| now - at < QUIET_AFTER_MESSAGE_SECS);
        if floor.bot_busy || recent_message {
            return Err(Suppressed::Busy);
        }
        if self.offers >= settings.max_offers {
            return Err(Suppressed::Capped);
        }
        if let Some(offer) = &self.last_offer
            && now - offer.at < self.cooldown_secs(settings)
        {
            return Err(Suppressed::Cooldown);
        }
        Ok(())
    }

    /// Whether an offer may go out for the Autoplay session this record is kept for (one
    /// record per session, beside the conversations' ones): at most `max_offers`, one per
    /// cooldown, whatever conversation they go to.
    pub fn check_session(&self, now: f64, settings: &GateSettings) -> Result<(), Suppressed> {
        if self.offers >= settings.max_offers {
            return Err(Suppressed::Capped);
        }
        if let Some(offer) = &self.last_offer
            && now - offer.at < settings.cooldown_secs
        {
            return Err(Suppressed::Cooldown);
        }
        Ok(())
    }

    /// Records an offer about to be sent (before sending: a crash after it never sends twice).
    pub fn offered(&mut self, now: f64, trigger: Trigger, firing_id: &str, detail: &str) {
        self.offers += 1;
        self.last_offer = Some(Offer {
            at: now,
            trigger,
            firing_id: firing_id.to_owned(),
            detail: detail.to_owned(),
            state: OfferState::Offered,
        });
    }

    /// Takes back an offer recorded by [`Self::offered`] that was not sent (declined, failed).
    pub fn withdraw(&mut self, previous: VisitorGate) {
        *self = previous;
    }

    /// The visitor wrote. Returns the offer made less than [`ENGAGED_WITHIN_SECS`] before (its
    /// replies say why the bot reached out), and whether this is the visitor's first answer
    /// to it (engagement is counted once).
    pub fn visitor_wrote(&mut self, now: f64) -> Option<(Offer, bool)> {
        self.visitor_wrote_at = Some(now);
        let offer = self.last_offer.as_mut()?;
        if now - offer.at > ENGAGED_WITHIN_SECS || now < offer.at {
            return None;
        }
        let first = offer.state != OfferState::Engaged;
        offer.state = OfferState::Engaged;
        Some((offer.clone(), first))
    }
}

/// At most `max` offers per minute across the site (a sliding window of their times).
#[derive(Debug, Clone, Default)]
pub struct MinuteCap {
    sent: std::collections::VecDeque<f64>,
}

impl MinuteCap {
    /// Takes a slot if one is free at `now`.
    pub fn take(&mut self, now: f64, max: usize) -> bool {
        while self.sent.front().is_some_and(|at| now - at >= 60.0) {
            self.sent.pop_front();
        }
        if self.sent.len() >= max {
            return false;
        }
        self.sent.push_back(now);
        true
    }

    /// Gives back the slot taken at `at` (the offer was not sent).
    pub fn give_back(&mut self, at: f64) {
        if let Some(i) = self.sent.iter().rposition(|t| *t == at) {
            self.sent.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: GateSettings = GateSettings { cooldown_secs: 300.0, max_offers: 2 };
    const QUIET: Floor = Floor { human: false, bot_busy: false, last_message_at: None };

    fn offer(gate: &mut VisitorGate, now: f64) {
        assert_eq!(gate.check(now, "ps", &QUIET, &SETTINGS), Ok(()));
        gate.offered(now, Trigger::PingPong, &format!("ps:ping_pong:{now}"), "went back and forth");
    }

    #[test]
    fn one_offer_per_cooldown_and_at_most_max_offers_per_session() {
        let mut gate = VisitorGate::default();
        offer(&mut gate, 1000.0);
        assert!(gate.visitor_wrote(1010.0).expect("engaged").1);
        assert_eq!(gate.check(1299.0, "ps", &QUIET, &SETTINGS), Err(Suppressed::Cooldown));
        offer(&mut gate, 1300.0);
        gate.visitor_wrote(1310.0);
        assert_eq!(gate.check(10_000.0, "ps", &QUIET, &SETTINGS), Err(Suppressed::Capped));
        assert_eq!(
            gate.check(10_000.0, "ps-next", &QUIET, &SETTINGS),
            Err(Suppressed::Capped),
            "another Autoplay session does not reset the conversation's count"
        );
    }

    #[test]
    fn an_autoplay_session_has_its_own_cap_and_cooldown_across_conversations() {
        let mut session = VisitorGate::default();
        assert_eq!(session.check_session(0.0, &SETTINGS), Ok(()));
        session.offered(0.0, Trigger::PingPong, "f1", "");
        assert_eq!(session.check_session(299.0, &SETTINGS), Err(Suppressed::Cooldown));
        assert_eq!(session.check_session(300.0, &SETTINGS), Ok(()));
        session.offered(300.0, Trigger::PingPong, "f2", "");
        assert_eq!(session.check_session(100_000.0, &SETTINGS), Err(Suppressed::Capped));
    }

    #[test]
    fn an_unanswered_offer_is_dismissed_after_two_minutes_and_doubles_the_cooldown() {
        let mut gate = VisitorGate::default();
        offer(&mut gate, 0.0);
        gate.settle(119.0);
        assert_eq!(gate.last_offer.as_ref().unwrap().state, OfferState::Offered);
        gate.settle(120.0);
        assert_eq!(gate.last_offer.as_ref().unwrap().state, OfferState::Dismissed);
        assert_eq!(gate.dismissals, 1);
        gate.settle(500.0);
        assert_eq!(gate.dismissals, 1, "counted once");
        assert_eq!(gate.check(599.0, "ps", &QUIET, &SETTINGS), Err(Suppressed::Cooldown));
        assert_eq!(gate.check(600.0, "ps", &QUIET, &SETTINGS), Ok(()));
        gate.dismissals = 40;
        assert_eq!(gate.cooldown_secs(&SETTINGS), 300.0 * 64.0, "bounded");
    }

    #[test]
    fn humans_hand_offs_busy_bots_and_recent_messages_hold_offers_back() {
        let mut gate = VisitorGate::default();
        let human = Floor { human: true, ..QUIET };
        assert_eq!(gate.check(0.0, "ps", &human, &SETTINGS), Err(Suppressed::Human));
        let busy = Floor { bot_busy: true, ..QUIET };
        assert_eq!(gate.check(0.0, "ps", &busy, &SETTINGS), Err(Suppressed::Busy));
        let recent = Floor { last_message_at: Some(100.0), ..QUIET };
        assert_eq!(gate.check(219.0, "ps", &recent, &SETTINGS), Err(Suppressed::Busy));
        assert_eq!(gate.check(220.0, "ps", &recent, &SETTINGS), Ok(()));
        gate.handed_off = true;
        assert_eq!(gate.check(10_000.0, "ps", &QUIET, &SETTINGS), Err(Suppressed::Human));
    }

    #[test]
    fn engagement_counts_once_and_only_within_ten_minutes() {
        let mut gate = VisitorGate::default();
        assert!(gate.visitor_wrote(5.0).is_none(), "no offer, nothing to answer");
        offer(&mut gate, 0.0);
        gate.settle(200.0);
        let (answered, first) = gate.visitor_wrote(599.0).expect("a late answer still engages");
        assert_eq!(answered.trigger, Trigger::PingPong);
        assert!(first);
        let (_, again) = gate.visitor_wrote(600.0).expect("later messages still learn why");
        assert!(!again, "engagement counts once");
        assert!(gate.visitor_wrote(601.0).is_none(), "not after ten minutes");
        let mut late = VisitorGate::default();
        offer(&mut late, 0.0);
        assert!(late.visitor_wrote(601.0).is_none());
    }

    #[test]
    fn a_withdrawn_offer_leaves_no_trace() {
        let mut gate = VisitorGate::default();
        let before = gate.clone();
        offer(&mut gate, 0.0);
        gate.withdraw(before.clone());
        assert_eq!(gate, before);
    }

    #[test]
    fn the_minute_cap_slides() {
        let mut cap = MinuteCap::default();
        assert!(cap.take(0.0, 2));
        assert!(cap.take(1.0, 2));
        assert!(!cap.take(59.0, 2));
        assert!(cap.take(60.0, 2), "the first slot is free again");
        cap.give_back(60.0);
        assert!(cap.take(60.5, 2));
    }
}
