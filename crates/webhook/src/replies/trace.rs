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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replies::test_support::{activity, conversation};
    use crate::replies::{Attempt, Sent};
    use plumbing::telemetry::Settled;

    /// The traces in `dir` once there are `n` (they are written in the background).
    async fn traces(dir: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
            let read: Vec<serde_json::Value> =
                files.iter().filter_map(|f| serde_json::from_slice(&std::fs::read(f).ok()?).ok()).collect();
            if read.len() >= n {
                assert_eq!(read.len(), n, "one trace per reply");
                return read;
            }
            assert!(tokio::time::Instant::now() < deadline, "{n} traces expected in {dir:?}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_trace_holds_what_the_model_got_and_what_became_of_the_reply() {
        let dir = tempfile::tempdir().unwrap();
        let step = TraceStep::new(Some(TraceWriter::open(dir.path().to_owned(), 10).unwrap()));
        let request = answer::prompt::reply_request_with("system", "[0] typed [EMAIL_1]", None, "why?");
        let sent = Sent {
            attempt: Attempt::Settled(Settled::HandedOver),
            text: Some("A teammate is joining.".into()),
            handoff: Some(answer::handoff::Reason::Asked),
            note: Some("Context for the team".into()),
        };
        step.write(
            "r1",
            &conversation(),
            &activity("[0] typed ana@example.com"),
            "[0] typed [EMAIL_1]",
            "m",
            &request,
            &sent,
        );
        let trace = traces(dir.path(), 1).await.remove(0);
        assert_eq!(trace["reply_id"], "r1");
        assert_eq!(trace["crisp_session"], "session_test");
        assert_eq!(trace["activity"], "[0] typed [EMAIL_1]", "the masked activity, as the model got it");
        assert_eq!(trace["outcome"], "handed_over");
        assert_eq!(trace["handoff"], "asked");
        assert_eq!(trace["note"], "Context for the team");
        assert_eq!(trace["request"]["messages"][0]["content"], "system");
        assert!(!trace.to_string().contains("ana@example.com"));

        let failed = Sent::only(Attempt::Retry, None);
        step.write("r2", &conversation(), &activity(""), "", "m", &request, &failed);
        let outcomes: Vec<String> =
            traces(dir.path(), 2).await.iter().map(|t| t["outcome"].as_str().unwrap().to_owned()).collect();
        assert!(outcomes.contains(&"failed".to_owned()), "{outcomes:?}");
        TraceStep::new(None).write("r3", &conversation(), &activity(""), "", "m", &request, &failed);
    }
}
