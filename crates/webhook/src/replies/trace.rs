//! The trace step: for each reply, when `TRACE_DIR` is set, the exact context and prompt sent,
//! the answer and what became of it, so any answer can be replayed and explained later.

use super::Sent;
use crate::context::Activity;
use crate::traces::{ReplyTrace, TraceWriter};
use activity::AutoplaySessionId;
use crisp::ConversationId;
use llm::ChatRequest;

pub struct TraceStep {
    writer: Option<TraceWriter>,
}

impl TraceStep {
    pub fn new(writer: Option<TraceWriter>) -> Self {
        Self { writer }
    }

    /// Writes the reply's trace. `activity_text` is the activity as the model got it (masked).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write(
        &self,
        reply_id: &str,
        session: &ConversationId,
        activity: &Activity,
        activity_text: &str,
        model: &str,
        request: &ChatRequest,
        sent: &Sent,
    ) {
        let Some(writer) = &self.writer else { return };
        writer.write(&ReplyTrace {
            reply_id,
            crisp_session: session.as_str(),
            at: delivery::inbox::now_ms() / 1000,
            linked_by: format!("{:?}", activity.linked_by),
            autoplay_session: activity.autoplay_session.as_ref().map(AutoplaySessionId::as_str),
            activity: activity_text,
            model,
            request: serde_json::json!({
                "messages": request.messages,
                "temperature": request.temperature,
                "max_tokens": request.max_tokens,
            }),
            answer: sent.text.as_deref(),
            outcome: sent.attempt.label(),
            handoff: sent.handoff.map(answer::handoff::Reason::name),
            note: sent.note.as_deref(),
        });
    }
}
