//! What the stand-in LLM writes: deterministic text derived from the prompt it was sent, so the
//! demo shows at a glance that the answer was grounded in the visitor's activity.

/// The system prompt of the listener's summary requests starts so (one user message).
pub const SUMMARY_PROMPT_START: &str = "You are summarising";

/// The answer to a reply prompt: it quotes the newest `[n] Action: ...` line of the activity
/// block (and its `Page:`) and turns the question into "here is how to ...".
pub fn reply(user_message: &str) -> String {
    let answer = reply_from_activity(user_message);
    match first_article(user_message) {
        Some((title, url)) => format!("{answer} The help center explains it: \"{title}\", {url}"),
        None => answer,
    }
}

/// The title and link of the first help center passage in the prompt, when there is one.
fn first_article(user_message: &str) -> Option<(&str, &str)> {
    let tag = &user_message[user_message.find("<article title=\"")? + "<article title=\"".len()..];
    let (title, rest) = tag.split_once('"')?;
    let url = rest.strip_prefix(" url=\"")?.split_once('"')?.0;
    Some((title, url))
}

fn reply_from_activity(user_message: &str) -> String {
    let (activity, question) = match user_message.rsplit_once("User question: ") {
        Some((activity, question)) => (activity, question.trim()),
        None => (user_message, ""),
    };
    let task = task_of(question);
    let lines: Vec<&str> = activity.lines().collect();
    let newest = lines.iter().rposition(|line| action_title(line).is_some());
    match newest {
        Some(at) => {
            let title = action_title(lines[at]).unwrap_or_default();
            let page = lines[at + 1..]
                .iter()
                .take(2)
                .find_map(|line| line.trim_start().strip_prefix("Page:"))
                .map(str::trim)
                .filter(|page| !page.is_empty());
            let place = page.map(|page| format!(" on {page}")).unwrap_or_default();
            format!(
                "I can see you just did \"{title}\"{place} — here is how to {task}: you are already in the right \
                 place, so follow the steps on that page and confirm, and tell me if anything there is unclear."
            )
        }
        None => format!(
            "I can't see any recent activity from you yet — here is how to {task}: tell me which page you are on \
             and I will walk you through it step by step."
        ),
    }
}

/// A short summary for the listener's summary requests: canned, with the number of actions.
pub fn summary(user_message: &str) -> String {
    let actions = user_message
        .lines()
        .filter(|line| {
            line.split_once(". [").is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    format!(
        "The user went through {actions} steps across the dashboard, billing and pricing pages and clicked \
         Upgrade plan; they seem to be considering a change of plan."
    )
}

/// `Click Export CSV button` from `[1] Action: Click Export CSV button`.
fn action_title(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let (index, title) = rest.split_once("] Action: ")?;
    (!index.is_empty() && index.bytes().all(|b| b.is_ascii_digit())).then_some(title.trim())
}

/// "change your plan" from "How do I change my plan?".
fn task_of(question: &str) -> String {
    let question = question.trim().trim_end_matches(['?', '.', '!']).trim();
    for prefix in ["how do i ", "how can i ", "how should i ", "how to ", "where can i ", "where do i ", "can i "] {
        let head = question.get(..prefix.len());
        if let (Some(head), Some(rest)) = (head, question.get(prefix.len()..))
            && head.eq_ignore_ascii_case(prefix)
            && !rest.trim().is_empty()
        {
            return rest
                .split(' ')
                .map(|word| match word {
                    "my" => "your",
                    "me" | "I" => "you",
                    "mine" => "yours",
                    other => other,
                })
                .collect::<Vec<_>>()
                .join(" ");
        }
    }
    if question.is_empty() { "get started".to_owned() } else { format!("sort out \"{question}\"") }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: &str = "## Current User Activity\nThe following is a record.\n\n[0] Action: Page Load: Pricing\n     Details: User landed on the pricing page\n     Page:    https://app.example.com/pricing\n[1] Action: Click Upgrade plan button\n     Details: User clicked Upgrade plan button\n     Page:    https://app.example.com/pricing\n\n\n---\nAnswer the user's question.\n\nUser question: How do I change my plan?";

    #[test]
    fn quotes_the_newest_action_and_rephrases_the_question() {
        assert_eq!(
            reply(PROMPT),
            "I can see you just did \"Click Upgrade plan button\" on https://app.example.com/pricing — here is how \
             to change your plan: you are already in the right place, so follow the steps on that page and \
             confirm, and tell me if anything there is unclear."
        );
    }

    #[test]
    fn without_activity_it_says_so() {
        let answer = reply("## Current User Activity\n(No activity recorded for this visitor.)\n\nUser question: hi");
        assert!(answer.starts_with("I can't see any recent activity"), "{answer}");
        assert!(answer.contains("sort out \"hi\""), "{answer}");
    }

    #[test]
    fn actions_in_the_question_are_not_quoted() {
        let answer = reply("[0] Action: Real\n     Page:    /a\n\nUser question: x\n[9] Action: Typed by visitor");
        assert!(answer.contains("\"Real\" on /a"), "{answer}");
    }

    #[test]
    fn questions_become_tasks() {
        assert_eq!(task_of("How do I change my plan?"), "change your plan");
        assert_eq!(task_of("where can I find my invoices"), "find your invoices");
        assert_eq!(task_of("  "), "get started");
        assert_eq!(task_of("Prix ?"), "sort out \"Prix\"");
    }

    #[test]
    fn summary_counts_the_numbered_actions() {
        let prompt = "You are summarising...\nActions:\n1. [0] pageview: a — /a\n2. [1] click: b — /b\n\nSummary:";
        assert!(summary(prompt).starts_with("The user went through 2 steps"));
    }
}
