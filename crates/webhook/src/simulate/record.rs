//! `webhook simulate --record CRISP_SESSION_ID --out FILE`: a scenario from a real
//! conversation: its visitor messages (Crisp's REST history, with the environment's real Crisp
//! settings) and the visitor's stored activity, with empty expectations to fill in. Personal
//! values are replaced by placeholders when redaction is on (`REDACT`).

use super::scenario::{ActivityItem, Expect, Operators, Scenario, Turn};
use crate::config::Cli;
use crate::context::{ContextSource, LinkTrust};
use crisp::ConversationId;
use plumbing::SecretString;
use plumbing::config::non_empty;
use plumbing::process::EXIT_CONFIG;
use std::path::Path;
use std::time::SystemTime;

pub async fn command(cli: &Cli, session: &str, out: &Path) -> i32 {
    let session = match ConversationId::parse(session) {
        Ok(session) => session,
        Err(e) => {
            eprintln!("error: --record: {e}");
            return EXIT_CONFIG;
        }
    };
    match record(cli, &session).await {
        Ok(scenario) => {
            let text = format!(
                "# Recorded from Crisp conversation {session}; fill in each turn's expect:.\n{}",
                scenario.to_yaml()
            );
            if let Err(e) = std::fs::write(out, text) {
                eprintln!("error: cannot write {}: {e}", out.display());
                return EXIT_CONFIG;
            }
            println!("wrote {} ({} turns, {} actions)", out.display(), scenario.turns.len(), scenario.activity.len());
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_CONFIG
        }
    }
}

async fn record(cli: &Cli, session: &ConversationId) -> Result<Scenario, String> {
    let crisp = cli.crisp_client().map_err(|e| e.to_string())?;
    let redactor = cli.redact.redactor().map_err(|e| e.to_string())?;
    let mut placeholders = privacy::Placeholders::new();
    let mut redact = |text: &str| redactor.redact_counted(text, &mut placeholders).text.into_owned();
    let messages = crisp.messages(session).await.map_err(|e| format!("cannot read the conversation: {e}"))?;
    let visitor: Vec<_> = messages.iter().filter(|m| m.from == "user" && m.kind == "text").collect();
    if visitor.is_empty() {
        return Err(format!("the conversation {session} has no visitor text message"));
    }
    let first_at = visitor.iter().find_map(|m| m.timestamp).map(|ms| ms as f64 / 1000.0);
    let turns = visitor
        .iter()
        .filter_map(|m| m.text.as_deref())
        .map(|text| Turn { visitor: redact(text), expect: Expect::default() })
        .collect();
    // The visitor's stored activity, found the way the replies find it.
    let store = cli.store.settings().map_err(|e| e.to_string())?;
    let redis = store.connect_redis().map_err(|e| e.to_string())?;
    let reader = store.open_reader(redis).map_err(|e| e.to_string())?;
    let context = ContextSource::new(
        crate::context::ContextScope::Session,
        cli.event_data_path.clone(),
        Some(reader.clone()),
        crisp.clone(),
        non_empty(cli.link_secret.as_deref()).map(SecretString::from),
        cli.context_max_chars,
        LinkTrust::default(),
    );
    let data = crisp.session_data(session).await.map_err(|e| format!("cannot read the conversation's data: {e}"))?;
    let now = SystemTime::now();
    let (by_session, by_user) = context.links_in(&data);
    let autoplay = match (by_session, by_user) {
        (Some(id), _) => Some(id),
        (None, Some(user)) => reader.latest_session_for_user(&user, now).await.map_err(|e| e.to_string())?,
        (None, None) => None,
    };
    let actions = match &autoplay {
        Some(id) => reader.session_context(id, now).await.map_err(|e| e.to_string())?.map(|c| c.actions),
        None => None,
    }
    .unwrap_or_default();
    if autoplay.is_none() {
        eprintln!("warning: the conversation is not linked to an Autoplay session; the scenario has no activity");
    }
    let newest = actions.iter().map(|a| a.timestamp_start).fold(0.0_f64, f64::max);
    let reference = first_at.unwrap_or(newest).max(newest);
    let count = actions.len();
    let activity = actions
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let at =
                if a.timestamp_start > 0.0 { (reference - a.timestamp_start).max(0.0) } else { (count - i) as f64 };
            let url = non_empty(Some(&a.canonical_url)).or_else(|| non_empty(Some(&a.raw_url)));
            ActivityItem { at: at.round(), title: redact(&a.title), url: url.map(|u| redact(&u)) }
        })
        .collect();
    Ok(Scenario {
        name: format!("recorded from {session}"),
        operators: Operators::Online,
        knowledge: None,
        activity,
        other_visitors: Vec::new(),
        turns,
    })
}
