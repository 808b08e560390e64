//! The reply prompt, shaped as the reference webhook builds it.

use crate::llm::{ChatMessage, ChatRequest, Role};

/// The reference system prompt (role, the Current User Activity record, how to answer, language).
pub const DEFAULT_SYSTEM_PROMPT: &str = include_str!("../prompts/system_prompt.txt");

const ACTIVITY_INTRO: &str = "The following is a real-time record of what this user has been doing in the last 2 minutes. Use it to give context-aware answers.";
const ACTIVITY_CLOSING: &str = "Answer the user's question using the activity above where relevant. If the activity doesn't help, answer normally. If you don't know, say so honestly.";

/// Reply temperature and length, as the reference.
pub const REPLY_TEMPERATURE: f32 = 0.3;
pub const REPLY_MAX_TOKENS: u32 = 512;

/// The user message: the `## Current User Activity` block, then `User question: {question}`.
pub fn reply_user_content(activity: &str, question: &str) -> String {
    format!(
        "## Current User Activity\n{ACTIVITY_INTRO}\n\n{activity}\n\n---\n{ACTIVITY_CLOSING}\n\nUser question: {question}"
    )
}

/// The whole chat request for one reply.
pub fn reply_request(system_prompt: &str, activity: &str, question: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![
            ChatMessage::new(Role::System, system_prompt),
            ChatMessage::new(Role::User, reply_user_content(activity, question)),
        ],
        temperature: REPLY_TEMPERATURE,
        max_tokens: REPLY_MAX_TOKENS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_content_layout_matches_the_reference() {
        let content = reply_user_content("[0] Action: x\n", "Hey :)");
        assert_eq!(
            content,
            "## Current User Activity\nThe following is a real-time record of what this user has been doing in the last 2 minutes. Use it to give context-aware answers.\n\n[0] Action: x\n\n\n---\nAnswer the user's question using the activity above where relevant. If the activity doesn't help, answer normally. If you don't know, say so honestly.\n\nUser question: Hey :)"
        );
        assert!(reply_user_content("", "q").contains("answers.\n\n\n\n---\n"));
    }

    #[test]
    fn system_prompt_has_the_reference_sections() {
        assert!(
            DEFAULT_SYSTEM_PROMPT.starts_with("You are a friendly and helpful assistant for users of this product.\n")
        );
        for heading in
            ["## 💬 How to use the \"Current User Activity\" record", "## ❓ How to answer questions", "## 🌐 Language"]
        {
            assert!(DEFAULT_SYSTEM_PROMPT.contains(heading), "{heading}");
        }
        assert!(DEFAULT_SYSTEM_PROMPT.ends_with("Respond in the same language the user writes in.\n"));
    }
}
