//! The LLM judge of `judge:` rubrics: the configured model (or `JUDGE_MODEL`) is asked for a
//! verdict with a reason, through a `verdict` tool call (or, from a server without tools, a
//! JSON object in its text).

use llm::OpenAiArgs;
use llm::{ChatMessage, ChatRequest, Completion, LlmClient, LlmError, Role, Tool};
use plumbing::SecretString;
use plumbing::config::{ConfigError, Problem, non_empty};
use plumbing::retry::RetryPolicy;
use serde::Serialize;
use serde_json::{Value, json};

/// The judge's tool.
pub const TOOL_NAME: &str = "verdict";

const SYSTEM: &str = "You grade one answer of a website's support chat bot against a rubric. \
Read the visitor's message, what the visitor was doing on the site, the bot's answer and the rubric. \
Call the verdict tool once: pass is true only when the answer meets the rubric; reason says why in one sentence. \
Without tools, answer with only a JSON object: {\"pass\": true or false, \"reason\": \"...\"}.";

pub struct Judge {
    llm: LlmClient,
}

/// The judge's request and verdict, as `--json` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct JudgeRecord {
    pub rubric: String,
    pub model: String,
    pub request: Value,
    pub verdict: Option<Verdict>,
    /// Why there is no verdict (the LLM failed, or its answer could not be read).
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Verdict {
    pub pass: bool,
    #[serde(default)]
    pub reason: String,
}

impl Judge {
    /// The environment's LLM, with `JUDGE_MODEL` as the model when set.
    pub fn new(openai: &OpenAiArgs, judge_model: Option<&str>) -> Result<Judge, ConfigError> {
        let key = non_empty(openai.api_key.as_deref())
            .ok_or(ConfigError::Missing { var: "OPENAI_API_KEY", flag: "--openai-api-key" })?;
        let model = non_empty(judge_model).unwrap_or_else(|| openai.model.clone());
        let llm = LlmClient::new(&openai.base_url, SecretString::from(key), model, RetryPolicy::default())
            .map_err(|e| ConfigError::invalid("OPENAI_BASE_URL", Problem::refused(e)))?;
        Ok(Judge { llm })
    }

    pub fn model(&self) -> &str {
        self.llm.model()
    }

    /// Asks for a verdict on `answer` to `question` under `rubric`.
    pub async fn verdict(&self, rubric: &str, question: &str, answer: &str, activity: &[&str]) -> JudgeRecord {
        let activity = if activity.is_empty() { "(none)".to_owned() } else { activity.join("\n- ") };
        let user = format!(
            "Rubric: {rubric}\n\nWhat the visitor did on the site, oldest first:\n- {activity}\n\nVisitor: {question}\n\nBot's answer:\n{answer}"
        );
        let mut request = ChatRequest {
            messages: vec![ChatMessage::new(Role::System, SYSTEM), ChatMessage::new(Role::User, user)],
            temperature: 0.0,
            max_tokens: 300,
            tools: vec![tool()],
        };
        let mut record = JudgeRecord {
            rubric: rubric.to_owned(),
            model: self.model().to_owned(),
            request: json!({"messages": request.messages, "tools": [TOOL_NAME], "temperature": 0.0}),
            verdict: None,
            error: None,
        };
        let mut completion = self.llm.complete_with_tools(&request).await;
        if let Err(LlmError::Status { status: 400 | 404 | 422, .. }) = completion {
            // A server without tools: the JSON object in the text.
            request.tools.clear();
            record.request["tools"] = json!([]);
            completion = self.llm.complete_with_tools(&request).await;
        }
        match completion {
            Ok(Completion::ToolCall { arguments, .. }) => match parse(&arguments) {
                Some(verdict) => record.verdict = Some(verdict),
                None => record.error = Some(format!("unreadable verdict: {}", cut(&arguments))),
            },
            Ok(Completion::Text(text)) => match parse(&text) {
                Some(verdict) => record.verdict = Some(verdict),
                None => record.error = Some(format!("unreadable verdict: {}", cut(&text))),
            },
            Err(e) => record.error = Some(format!("the judge's LLM failed: {e}")),
        }
        record
    }
}

fn tool() -> Tool {
    Tool {
        name: TOOL_NAME,
        description: "Give the verdict on the bot's answer under the rubric.",
        parameters: json!({
            "type": "object",
            "properties": {
                "pass": {"type": "boolean", "description": "true when the answer meets the rubric"},
                "reason": {"type": "string", "description": "why, in one sentence"}
            },
            "required": ["pass", "reason"]
        }),
    }
}

/// A verdict from a JSON object, alone or inside text (a code fence, words around it).
pub fn parse(text: &str) -> Option<Verdict> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    let object: Value = serde_json::from_str(text.get(start..=end)?).ok()?;
    let pass = match object.get("pass")? {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "pass" | "yes"),
        _ => return None,
    };
    let reason = object.get("reason").and_then(Value::as_str).unwrap_or_default().to_owned();
    Some(Verdict { pass, reason })
}

fn cut(text: &str) -> String {
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_read_from_json_alone_or_in_text() {
        assert_eq!(parse(r#"{"pass": true, "reason": "ok"}"#), Some(Verdict { pass: true, reason: "ok".into() }));
        let fenced = "Here:\n```json\n{\"pass\": false, \"reason\": \"no button\"}\n```";
        assert_eq!(parse(fenced), Some(Verdict { pass: false, reason: "no button".into() }));
        assert_eq!(parse(r#"{"pass": "yes"}"#).map(|v| v.pass), Some(true));
        assert_eq!(parse("I think it passes"), None);
        assert_eq!(parse(r#"{"reason": "no pass field"}"#), None);
    }
}
