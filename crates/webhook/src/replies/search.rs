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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replies::test_support::{activity, crisp_at};
    use activity::action::ActionRecord;
    use activity::context::SessionContext;
    use std::borrow::Cow;

    fn on_page(title: &str, url: &str) -> Activity {
        let action = ActionRecord {
            title: Cow::Owned(format!("Page Load: {title}")),
            canonical_url: Cow::Owned(url.into()),
            ..Default::default()
        };
        Activity { context: Some(SessionContext { summary: None, actions: vec![action] }), ..activity("") }
    }

    async fn help_center(dir: &std::path::Path) -> Arc<KnowledgeBase> {
        let articles = dir.join("articles");
        std::fs::create_dir_all(&articles).unwrap();
        std::fs::write(
            articles.join("invoices.md"),
            "# Download invoices\n\nOn the Billing page, open Invoices and press Download next to the invoice.\n",
        )
        .unwrap();
        std::fs::write(
            articles.join("desktop.md"),
            "# Download the desktop app\n\nOn the Apps page, choose Desktop and press Download for your system.\n",
        )
        .unwrap();
        let settings =
            ::knowledge::KnowledgeSettings { dir: Some(articles), index_dir: dir.join("index"), ..Default::default() };
        let openai = llm::OpenAiArgs { api_key: None, base_url: "http://127.0.0.1:9".into(), model: "model".into() };
        let crisp = crisp_at("http://127.0.0.1:9");
        let base =
            KnowledgeBase::open(settings, crisp.settings(), &openai, plumbing::telemetry::Metrics::new()).unwrap();
        base.start().await;
        base
    }

    #[tokio::test]
    async fn the_same_words_find_the_article_of_the_page_the_visitor_is_on() {
        let dir = tempfile::tempdir().unwrap();
        let step = KnowledgeStep::new(Some(help_center(dir.path()).await));
        let words = "how do I download it?";
        let billing = step.search(words, &on_page("Billing", "https://app.example.com/billing/invoices")).await;
        let apps = step.search(words, &on_page("Apps", "https://app.example.com/apps/desktop")).await;
        assert!(
            billing.articles().unwrap().starts_with("Help center articles the bot used: Download invoices"),
            "{:?}",
            billing.articles()
        );
        assert!(
            apps.articles().unwrap().starts_with("Help center articles the bot used: Download the desktop app"),
            "{:?}",
            apps.articles()
        );
        let help = billing.help.expect("passages for the prompt");
        assert!(help.text.contains("press Download next to the invoice") && !help.strict);
    }

    #[tokio::test]
    async fn without_a_help_center_nothing_is_added() {
        let found = KnowledgeStep::new(None).search("how do I download it?", &activity("")).await;
        assert!(found.help.is_none() && found.articles().is_none());
    }
}
