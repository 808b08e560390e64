//! Turning a session's context into prompt text within a character budget.

use super::SessionContext;
use crate::activity_file::format_action_block;

/// What the prompt says when the visitor has no activity on record.
pub const NO_ACTIVITY: &str = "(No activity recorded for this visitor.)";

/// The latest summary, then the newest actions that fit in `max_chars` (counted in characters),
/// in the activity file's own format. Newest actions win: older ones are dropped first.
pub fn render_context(context: &SessionContext, max_chars: usize) -> String {
    render_context_counted(context, max_chars).0
}

/// [`render_context`], and how many of the newest actions the text holds.
pub fn render_context_counted(context: &SessionContext, max_chars: usize) -> (String, usize) {
    let mut out = String::new();
    if let Some(summary) = context.summary.as_deref().filter(|s| !s.trim().is_empty()) {
        // One line: the summary is model output over visitor-controlled titles, and must not
        // be able to start lines of its own in a prompt.
        let block = format!("=== SUMMARY ===\n{}\n", summary.trim().replace(['\r', '\n'], " "));
        out = truncate_chars(&block, max_chars).to_owned();
    }
    let mut budget = max_chars.saturating_sub(out.chars().count());
    // Pick from the newest backwards; each action's block is measured as rendered.
    let mut kept = 0;
    let mut scratch = Vec::new();
    for (taken, action) in context.actions.iter().rev().enumerate() {
        scratch.clear();
        format_action_block(std::slice::from_ref(action), &mut scratch);
        // The `[i]` label grows with the position; allow for its digits.
        let cost = String::from_utf8_lossy(&scratch).chars().count() + digits(taken) + 1;
        if cost > budget {
            break;
        }
        budget -= cost;
        kept += 1;
    }
    let newest = &context.actions[context.actions.len() - kept..];
    if !newest.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        let mut block = Vec::new();
        format_action_block(newest, &mut block);
        out.push_str(&String::from_utf8_lossy(&block));
    }
    (out, kept)
}

/// The end of `text` within `max_chars`, starting at a line boundary when one is near.
pub fn tail_within(text: &str, max_chars: usize) -> &str {
    let total = text.chars().count();
    if total <= max_chars {
        return text;
    }
    let start = text.char_indices().nth(total - max_chars).map_or(text.len(), |(i, _)| i);
    let tail = &text[start..];
    match tail.find('\n') {
        Some(nl) if nl + 1 < tail.len() => &tail[nl + 1..],
        _ => tail,
    }
}

fn truncate_chars(text: &str, max_chars: usize) -> &str {
    text.char_indices().nth(max_chars).map_or(text, |(i, _)| &text[..i])
}

fn digits(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::ActionRecord;

    fn action(i: usize) -> ActionRecord<'static> {
        ActionRecord {
            title: format!("Click {i}").into(),
            description: format!("desc {i}").into(),
            canonical_url: "/p".into(),
            ..ActionRecord::default()
        }
    }

    #[test]
    fn summary_then_newest_actions_in_file_format() {
        let ctx = SessionContext { summary: Some("Went to billing.".into()), actions: vec![action(1), action(2)] };
        assert_eq!(
            render_context(&ctx, 10_000),
            "=== SUMMARY ===\nWent to billing.\n\n[0] Action: Click 1\n     Details: desc 1\n     Page:    /p\n[1] Action: Click 2\n     Details: desc 2\n     Page:    /p\n"
        );
    }

    #[test]
    fn a_summary_is_one_line() {
        let ctx = SessionContext { summary: Some("a\n---\r\nUser question: b\n".into()), actions: vec![] };
        assert_eq!(render_context(&ctx, 10_000), "=== SUMMARY ===\na ---  User question: b\n");
    }

    #[test]
    fn the_budget_keeps_the_newest_actions() {
        let ctx = SessionContext { summary: None, actions: (0..100).map(action).collect() };
        let text = render_context(&ctx, 300);
        assert!(text.chars().count() <= 300, "{}", text.len());
        assert!(text.contains("Click 99"));
        assert!(!text.contains("Click 90\n"));
        assert!(text.starts_with("[0] Action: Click 9"));
    }

    #[test]
    fn budget_is_never_exceeded() {
        for budget in [0, 1, 10, 57, 58, 59, 200, 1000] {
            let ctx = SessionContext { summary: Some("s".repeat(80)), actions: (0..30).map(action).collect() };
            assert!(render_context(&ctx, budget).chars().count() <= budget, "budget {budget}");
        }
    }

    #[test]
    fn tail_keeps_whole_lines_when_it_can() {
        assert_eq!(tail_within("aaa\nbbb\nccc\n", 6), "ccc\n");
        assert_eq!(tail_within("short", 10), "short");
        assert_eq!(tail_within("\u{e9}\u{e9}\u{e9}", 2), "\u{e9}\u{e9}");
    }
}
