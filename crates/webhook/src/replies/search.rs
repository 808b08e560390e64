//! The knowledge step: the help center searched with the visitor's words, steered by what they
//! are doing (their page, their last actions). It runs on this host, before anything is masked:
//! the passages found then pass the redaction step with the rest of the prompt.

use super::redaction::HelpCenter;
use crate::context::Activity;
use crate::knowledge::{KnowledgeBase, MAX_PASSAGE_CHARS, articles_line, query_for};
use knowledge::Hit;
use std::sync::Arc;

pub struct KnowledgeStep {
    /// The product's help center (`KNOWLEDGE_*`), when configured.
    base: Option<Arc<KnowledgeBase>>,
}

/// What the help center offers for one reply.
pub(super) struct Found {
    hits: Vec<Hit>,
    /// The passages for the prompt; `None` without a help center.
    pub help: Option<HelpCenter>,
}

impl Found {
    /// The articles used, for the operators' note.
    pub fn articles(&self) -> Option<String> {
        articles_line(&self.hits)
    }
}

impl KnowledgeStep {
    pub fn new(base: Option<Arc<KnowledgeBase>>) -> Self {
        Self { base }
    }

    pub(super) async fn search(&self, words: &str, activity: &Activity) -> Found {
        let Some(base) = &self.base else { return Found { hits: Vec::new(), help: None } };
        let actions = activity.context.as_ref().map_or(&[][..], |c| c.actions.as_slice());
        let hits = base.search(&query_for(words, actions)).await;
        let help = HelpCenter { text: ::knowledge::format_passages(&hits, MAX_PASSAGE_CHARS), strict: base.strict() };
        Found { hits, help: Some(help) }
    }
}
