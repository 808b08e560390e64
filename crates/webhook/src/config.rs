//! The webhook's settings: flags, environment and `.env`, each with its default.

use crate::context::{ContextScope, LinkTrust};
use crate::proactive::ProactiveSettings;
use crate::replies::{HandoffSettings, PromptLimits};
use crate::routes::HookKey;
use crate::server::ConnectionLimits;
use activity::config::{StoreArgs, StoreSettings};
use clap::Parser;
use crisp::{CrispClient, CrispSettings, WebsiteId};
use delivery::coordination::CoordTimings;
use llm::LlmClient;
use llm::OpenAiArgs;
use plumbing::SecretString;
use plumbing::config::{ConfigError, Problem, RedactArgs, at_least_one, http_url, non_empty, socket_addr};
use plumbing::retry::RetryPolicy;
use proactive::Trigger;
use proactive::gate::GateSettings;
use proactive::offer::DEFAULT_TEMPLATES;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Receives Crisp chat web hooks and answers each visitor message with an LLM reply grounded in
/// the visitor's live activity, posted into the conversation as an operator.
#[derive(Parser, Clone)]
#[command(name = "webhook", version, about, long_about = None)]
pub struct Cli {
    /// The `?key=` secret in the hook URL registered in Crisp (required).
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true, value_name = "SECRET")]
    pub webhook_secret: Option<String>,
    /// Crisp REST token identifier (required).
    #[arg(long, env = "CRISP_TOKEN_IDENTIFIER", hide_env_values = true, value_name = "ID")]
    pub crisp_token_identifier: Option<String>,
    /// Crisp REST token key (required).
    #[arg(long, env = "CRISP_TOKEN_KEY", hide_env_values = true, value_name = "KEY")]
    pub crisp_token_key: Option<String>,
    /// Crisp website id (required; CRISP_WEBSITE_ID is accepted too).
    #[arg(long, env = "WEBSITE_ID", value_name = "UUID")]
    pub website_id: Option<String>,
    /// Fallback for WEBSITE_ID.
    #[arg(long, env = "CRISP_WEBSITE_ID", value_name = "UUID")]
    pub crisp_website_id: Option<String>,
    /// Crisp REST API base URL.
    #[arg(
        long,
        env = "CRISP_API_BASE_URL",
        hide_env_values = true,
        default_value = "https://api.crisp.chat/v1",
        value_name = "URL"
    )]
    pub crisp_api_base_url: String,
    /// Sent as X-Crisp-Tier (`plugin` or `website`, matching the token).
    #[arg(long, env = "CRISP_TIER", default_value = "plugin", value_name = "TIER")]
    pub crisp_tier: String,
    #[command(flatten)]
    pub openai: OpenAiArgs,
    /// The shared activity file written by the listener.
    #[arg(long, env = "EVENT_DATA_PATH", default_value = "event_data.txt", value_name = "PATH")]
    pub event_data_path: PathBuf,
    /// Address the HTTP server listens on.
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0:3000", value_name = "ADDR")]
    pub bind_addr: String,
    /// A file whose text replaces the built-in system prompt.
    #[arg(long, env = "SYSTEM_PROMPT_PATH", value_name = "PATH")]
    pub system_prompt_path: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub redact: RedactArgs,
    #[command(flatten)]
    pub knowledge: crate::knowledge::KnowledgeArgs,
    #[command(flatten)]
    pub outcome: crate::outcomes::OutcomeArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `session`: each visitor's own activity; `shared`: the whole activity file for everyone
    /// (the reference behaviour, single-visitor set-ups only).
    #[arg(long, env = "CONTEXT_SCOPE", value_enum, default_value = "session", value_name = "SCOPE")]
    pub context_scope: ContextScope,
    /// Characters of activity at most in one prompt (the newest are kept).
    #[arg(long, env = "CONTEXT_MAX_CHARS", default_value_t = 6000, value_name = "N")]
    pub context_max_chars: usize,
    /// Key of the autoplay_user_sig HMAC computed by your backend; unset disables user-id links.
    #[arg(long, env = "LINK_SECRET", hide_env_values = true, value_name = "SECRET")]
    pub link_secret: Option<String>,
    /// `autoplay_session_id` links a conversation only with `autoplay_session_sig` = hex
    /// HMAC-SHA256(LINK_SECRET, session id), computed by your backend (needs LINK_SECRET).
    #[arg(long, env = "LINK_REQUIRE_SIGNED_SESSION", default_value_t = false, value_name = "BOOL", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub link_require_signed_session: bool,
    /// The stream's `conversation_id` links a conversation on its own: only when your Autoplay
    /// connector sets it server-side (otherwise it is the visitor's claim, used only when the
    /// conversation's own link points to the same Autoplay session).
    #[arg(long, env = "TRUST_STREAM_CONVERSATION_ID", default_value_t = false, value_name = "BOOL", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub trust_stream_conversation_id: bool,
    /// Once a human operator writes in a conversation, the bot stays silent there this long.
    #[arg(long, env = "HUMAN_TAKEOVER_SECS", default_value_t = 1800, value_name = "SECS")]
    pub human_takeover_secs: u64,
    /// Sent when the LLM cannot answer, so the visitor never meets silence; empty disables it.
    #[arg(long, env = "FALLBACK_MESSAGE", default_value = DEFAULT_FALLBACK, value_name = "TEXT")]
    pub fallback_message: String,
    /// Earlier turns of the conversation included in the prompt; 0 disables history.
    #[arg(long, env = "HISTORY_TURNS", default_value_t = 6, value_name = "N")]
    pub history_turns: usize,
    /// Plugin-hook signing secret: when set, X-Crisp-Signature must be valid too.
    #[arg(long, env = "CRISP_HOOK_SECRET", hide_env_values = true, value_name = "SECRET")]
    pub crisp_hook_secret: Option<String>,
    /// With CRISP_HOOK_SECRET: a hook whose X-Crisp-Request-Timestamp is further than this
    /// from now (either way) is refused with 401.
    #[arg(long, env = "HOOK_MAX_AGE_SECS", default_value_t = 300, value_name = "SECS")]
    pub hook_max_age_secs: u64,
    /// Write a JSON trace of each reply (context, prompt, answer) into this directory; unset: off.
    #[arg(long, env = "TRACE_DIR", value_name = "PATH")]
    pub trace_dir: Option<PathBuf>,
    /// Traces kept at most; the oldest are deleted.
    #[arg(long, env = "TRACE_MAX_FILES", default_value_t = 1000, value_name = "N")]
    pub trace_max_files: usize,
    /// Model of the LLM judge of `webhook simulate` (`judge:` rubrics); unset: OPENAI_MODEL.
    #[arg(long, env = "JUDGE_MODEL", value_name = "MODEL")]
    pub judge_model: Option<String>,
    /// Check the configuration and reach each outside service once, then exit.
    #[arg(long)]
    pub check: bool,
    /// Replies being written at once, across all conversations.
    #[arg(long, env = "MAX_CONCURRENT_REPLIES", default_value_t = 16, value_name = "N")]
    pub max_concurrent_replies: usize,
    /// On SIGTERM, how long replies in flight may take to finish.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30, value_name = "SECS")]
    pub shutdown_grace_secs: u64,
    /// An accepted message older than this when its turn comes is settled unanswered.
    #[arg(long, env = "REPLY_MAX_AGE_SECS", default_value_t = 3600, value_name = "SECS")]
    pub reply_max_age_secs: u64,
    /// What the visitor reads when the bot hands over to a human and an operator is online.
    #[arg(long, env = "HANDOFF_MESSAGE", default_value = DEFAULT_HANDOFF_MESSAGE, value_name = "TEXT")]
    pub handoff_message: String,
    /// What the visitor reads when the bot hands over and no operator is online.
    #[arg(long, env = "HANDOFF_OFFLINE_MESSAGE", default_value = DEFAULT_HANDOFF_OFFLINE_MESSAGE, value_name = "TEXT")]
    pub handoff_offline_message: String,
    /// Crisp operator user id a handed-over conversation is assigned to; unset: none.
    #[arg(long, env = "HANDOFF_ASSIGN_USER_ID", value_name = "USER_ID")]
    pub handoff_assign_user_id: Option<String>,
    /// Visitor messages recorded and not yet answered (this process's inbox); beyond it hooks
    /// get 503 until replies catch up.
    #[arg(long, env = "INBOX_MAX_MESSAGES", default_value_t = 10_000, value_name = "N")]
    pub inbox_max_messages: usize,
    /// With Redis: a replica's hold on a conversation; another resumes it once this expires.
    #[arg(long, env = "HOLD_LEASE_SECS", default_value_t = 30, value_name = "SECS")]
    pub hold_lease_secs: u64,
    /// Characters of the visitor's words in one prompt (a message or a burst; newest kept).
    #[arg(long, env = "MAX_MESSAGE_CHARS", default_value_t = 4000, value_name = "N")]
    pub max_message_chars: usize,
    /// Newest messages of a burst answered together.
    #[arg(long, env = "MAX_BURST_MESSAGES", default_value_t = 20, value_name = "N")]
    pub max_burst_messages: usize,
    /// A connection must send its request headers within this time.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_name = "SECS")]
    pub header_read_timeout_secs: u64,
    /// A keep-alive connection idle this long between requests is closed.
    #[arg(long, env = "IDLE_TIMEOUT_SECS", default_value_t = 60, value_name = "SECS")]
    pub idle_timeout_secs: u64,
    /// A request (body included) must be answered within this time, else 408.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 30, value_name = "SECS")]
    pub request_timeout_secs: u64,
    /// Open connections at most (lowered to fit the open-file limit); at the cap the oldest
    /// connection that is not mid-request is closed for the new one.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,
    /// Serve /metrics on this address only (e.g. 127.0.0.1:9102) instead of the public port.
    #[arg(long, env = "METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Crisp Hugo's MCP signing secret (`mcp_sec_…`); when set, signed calls to /mcp
    /// read the activity of the visitor of the conversation they come from.
    #[arg(long, env = "MCP_SIGNING_SECRET", hide_env_values = true, value_name = "SECRET")]
    pub mcp_signing_secret: Option<String>,
    /// Bearer key of other MCP clients at /mcp (get_live_user_activity); at
    /// least 16 characters.
    #[arg(long, env = "MCP_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub mcp_api_key: Option<String>,
    /// A signed /mcp request's X-Crisp-Timestamp must be within this many seconds of now.
    #[arg(long, env = "MCP_SIGNATURE_WINDOW_SECS", default_value_t = crate::mcp::DEFAULT_SIGNATURE_WINDOW_SECS, value_name = "SECS")]
    pub mcp_signature_window_secs: u64,
    /// Triggers the bot offers help for, e.g. `ping_pong,dwell,repeat` (the listener's
    /// setting of the same name decides which fire); empty: no proactive offers.
    #[arg(long, env = "PROACTIVE_TRIGGERS", default_value = "", value_name = "LIST")]
    pub proactive_triggers: String,
    /// At most one offer per visitor this often (doubled by each unanswered offer).
    #[arg(long, env = "PROACTIVE_COOLDOWN_SECS", default_value_t = 300, value_name = "SECS")]
    pub proactive_cooldown_secs: u64,
    /// Offers per Autoplay session at most.
    #[arg(long, env = "PROACTIVE_MAX_OFFERS", default_value_t = 2, value_name = "N")]
    pub proactive_max_offers: u32,
    /// Offers per minute across the site at most (Crisp's daily plugin quota).
    #[arg(long, env = "PROACTIVE_MAX_PER_MINUTE", default_value_t = 30, value_name = "N")]
    pub proactive_max_per_minute: usize,
    /// Sent for `ping_pong` when the LLM cannot write the offer.
    #[arg(long, env = "PROACTIVE_TEMPLATE_PING_PONG", default_value = DEFAULT_TEMPLATES[0].1, value_name = "TEXT")]
    pub proactive_template_ping_pong: String,
    /// Sent for `dwell` when the LLM cannot write the offer.
    #[arg(long, env = "PROACTIVE_TEMPLATE_DWELL", default_value = DEFAULT_TEMPLATES[1].1, value_name = "TEXT")]
    pub proactive_template_dwell: String,
    /// Sent for `repeat` when the LLM cannot write the offer.
    #[arg(long, env = "PROACTIVE_TEMPLATE_REPEAT", default_value = DEFAULT_TEMPLATES[2].1, value_name = "TEXT")]
    pub proactive_template_repeat: String,
    /// Sent for `error_page` when the LLM cannot write the offer.
    #[arg(long, env = "PROACTIVE_TEMPLATE_ERROR_PAGE", default_value = DEFAULT_TEMPLATES[3].1, value_name = "TEXT")]
    pub proactive_template_error_page: String,
}

/// One-shot commands of the `webhook` binary, run instead of the server.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Print `TEXT` as the LLM would see it (personal data and secrets replaced by
    /// placeholders, per REDACT), and what was found, by kind.
    Redact {
        /// The text to check.
        text: String,
    },
    /// Tune the help center search: the passages a visitor would get, or the index's size.
    Knowledge {
        #[command(subcommand)]
        action: KnowledgeCommand,
    },
    /// Print what became of the bot's answers (outcomes, first-reply time, follow-ups,
    /// hand-offs, proactive offers) from the outcome records (DATA_DIR, or Redis).
    Report {
        /// Answers since this long ago (`7d`, `24h`, `30m`) or since a Unix time.
        #[arg(long, default_value = "7d", value_name = "TIME")]
        since: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run scenario simulations against the real reply pipeline (Crisp replaced by an
    /// in-memory conversation; the LLM settings of this environment), or `--record` a scenario
    /// from a real conversation.
    Simulate(SimulateArgs),
}

/// `webhook knowledge …`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum KnowledgeCommand {
    /// Print the passages and scores a visitor asking TEXT would get.
    Search {
        /// The visitor's words.
        text: String,
        /// The title of the page the visitor is on (steers ambiguous questions).
        #[arg(long)]
        page: Option<String>,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the number of documents and passages and the index size.
    Stats,
}

/// `webhook simulate PATH... [--repeat K] [--min-pass P] [--concurrency N] [--json FILE]
/// [--junit FILE]`, or `webhook simulate --record CRISP_SESSION_ID --out FILE`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Scenario files (YAML), or folders of them.
    #[arg(value_name = "PATH", required_unless_present = "record")]
    pub paths: Vec<PathBuf>,
    /// Runs of each scenario (pass^k: a scenario passes when all its runs pass).
    #[arg(long, default_value_t = 3, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Exit 0 only when pass^k (the share of scenarios whose runs all pass) is at least this.
    #[arg(long, default_value_t = 1.0, value_name = "P")]
    pub min_pass: f64,
    /// Runs at once.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,
    /// Write the whole result (answers, checks, judge requests and verdicts) as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write JUnit XML here (one test case per scenario).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a scenario from this real Crisp conversation (its visitor messages and the
    /// visitor's stored activity) instead of running any; needs --out.
    #[arg(long, value_name = "CRISP_SESSION_ID", requires = "out", conflicts_with = "paths")]
    pub record: Option<String>,
    /// Where --record writes the scenario.
    #[arg(long, value_name = "FILE", requires = "record")]
    pub out: Option<PathBuf>,
}

/// Messages recorded and not yet answered, per conversation; beyond it a hook gets `503`.
pub const MAX_WAITING_PER_CONVERSATION: usize = 100;

/// What the visitor reads on a hand-off, operators online / offline.
pub const DEFAULT_HANDOFF_MESSAGE: &str = "I'm connecting you with a teammate. They'll reply right here shortly.";
pub const DEFAULT_HANDOFF_OFFLINE_MESSAGE: &str = "I've passed your conversation to our team. Nobody is online right now; a teammate will reply here as soon as they're back.";

/// What the visitor reads when the LLM cannot answer.
pub const DEFAULT_FALLBACK: &str = "Thanks for your message! A teammate will get back to you shortly.";

/// Validated settings: parsing them reads no file and opens nothing; its builder (`Service::build` of [`crate::App`]) does.
pub struct Settings {
    /// `TRACE_DIR` (unset: no traces) and `TRACE_MAX_FILES`.
    pub trace_dir: Option<PathBuf>,
    pub trace_max_files: usize,
    /// The context store (`session` scope), the inbox journal (`DATA_DIR`) and, with Redis,
    /// the coordination of replicas.
    pub store: StoreSettings,
    pub timings: CoordTimings,
    /// Accepted messages older than this when their turn comes are settled unanswered.
    pub reply_max_age: Duration,
    /// Visitor messages recorded and not yet answered, at most.
    pub inbox_max_messages: usize,
    pub handoff: HandoffSettings,
    pub fallback_message: Option<String>,
    pub history_turns: usize,
    pub crisp_hook_secret: Option<SecretString>,
    /// Signed hooks older (or newer) than this are refused.
    pub hook_max_age: Duration,
    pub hook_key: HookKey,
    pub website_id: WebsiteId,
    pub crisp: CrispClient,
    pub llm: LlmClient,
    pub event_data_path: PathBuf,
    pub context_scope: ContextScope,
    pub context_max_chars: usize,
    pub link_secret: Option<SecretString>,
    /// `TRUST_STREAM_CONVERSATION_ID` and `LINK_REQUIRE_SIGNED_SESSION`.
    pub link_trust: LinkTrust,
    pub bind_addr: SocketAddr,
    /// `SYSTEM_PROMPT_PATH`; `None`: the built-in prompt.
    pub system_prompt_path: Option<PathBuf>,
    pub max_concurrent_replies: usize,
    pub shutdown_grace: Duration,
    pub prompt_limits: PromptLimits,
    pub connections: ConnectionLimits,
    /// `/metrics` on its own address; `None`: on the public port.
    pub metrics_addr: Option<SocketAddr>,
    /// `/mcp` is served when either is set.
    pub mcp_signing_secret: Option<SecretString>,
    pub mcp_api_key: Option<SecretString>,
    /// `MCP_SIGNATURE_WINDOW_SECS`.
    pub mcp_signature_window: Duration,
    /// `None`: no proactive offers.
    pub proactive: Option<ProactiveSettings>,
    /// What is replaced by placeholders before text goes to the LLM (`REDACT`).
    pub redactor: std::sync::Arc<privacy::Redactor>,
    /// The help center (`KNOWLEDGE_*`); `None`: no source configured.
    pub knowledge: Option<knowledge::KnowledgeSettings>,
    /// For the embeddings of hybrid search (the same server as the chat model).
    pub openai: OpenAiArgs,
    /// `OUTCOME_*` and `OFFER_*`: answers' outcomes and proactive offer learning.
    pub outcomes: outcomes::Settings,
}

/// A text the visitor reads: not empty.
fn required_text(value: &str, var: &'static str) -> Result<String, ConfigError> {
    non_empty(Some(value)).ok_or(ConfigError::invalid(var, Problem::Empty))
}

fn required(value: Option<&str>, var: &'static str, flag: &'static str) -> Result<String, ConfigError> {
    non_empty(value).ok_or(ConfigError::Missing { var, flag })
}

impl Cli {
    /// The Crisp settings when every one of them is given (one-shot commands that may do
    /// without them).
    pub fn crisp_settings(&self) -> Option<CrispSettings> {
        Some(CrispSettings {
            api_base_url: self.crisp_api_base_url.clone(),
            website_id: non_empty(self.website_id.as_deref())
                .or_else(|| non_empty(self.crisp_website_id.as_deref()))
                .and_then(|id| WebsiteId::parse(id).ok())?,
            token_identifier: non_empty(self.crisp_token_identifier.as_deref())?,
            token_key: SecretString::from(non_empty(self.crisp_token_key.as_deref())?),
            tier: self.crisp_tier.trim().to_owned(),
        })
    }

    /// The Crisp client of these settings (`CRISP_*`, `WEBSITE_ID`): every value required and
    /// checked.
    pub fn crisp_client(&self) -> Result<CrispClient, ConfigError> {
        let identifier =
            required(self.crisp_token_identifier.as_deref(), "CRISP_TOKEN_IDENTIFIER", "--crisp-token-identifier")?;
        let key = required(self.crisp_token_key.as_deref(), "CRISP_TOKEN_KEY", "--crisp-token-key")?;
        let website_id = non_empty(self.website_id.as_deref())
            .or_else(|| non_empty(self.crisp_website_id.as_deref()))
            .ok_or(ConfigError::Missing { var: "WEBSITE_ID", flag: "--website-id" })?;
        let website_id = WebsiteId::parse(website_id).map_err(|e| ConfigError::invalid("WEBSITE_ID", e))?;
        http_url("CRISP_API_BASE_URL", &self.crisp_api_base_url)?;
        CrispClient::new(
            CrispSettings {
                api_base_url: self.crisp_api_base_url.clone(),
                website_id,
                token_identifier: identifier,
                token_key: SecretString::from(key),
                tier: self.crisp_tier.trim().to_owned(),
            },
            RetryPolicy::default(),
        )
        .map_err(|e| ConfigError::invalid("CRISP_API_BASE_URL", Problem::refused(e)))
    }

    pub fn into_settings(self) -> Result<Settings, ConfigError> {
        let hook_key = required(self.webhook_secret.as_deref(), "WEBHOOK_SECRET", "--webhook-secret")?;
        let hook_key = HookKey::parse(&hook_key).map_err(|e| ConfigError::invalid("WEBHOOK_SECRET", e))?;
        let crisp = self.crisp_client()?;
        let website_id = crisp.website_id().clone();
        let llm = self.openai.client(RetryPolicy::default())?;
        let bind_addr = self.bind_addr.parse().map_err(|source| {
            ConfigError::invalid("BIND_ADDR", Problem::NotAddress { source, example: "0.0.0.0:3000" })
        })?;
        at_least_one("MAX_CONCURRENT_REPLIES", self.max_concurrent_replies as u64)?;
        let prompt_limits = PromptLimits {
            max_message_chars: at_least_one("MAX_MESSAGE_CHARS", self.max_message_chars as u64)? as usize,
            max_burst_messages: at_least_one("MAX_BURST_MESSAGES", self.max_burst_messages as u64)? as usize,
        };
        let connections = ConnectionLimits {
            header_read_timeout: Duration::from_secs(at_least_one(
                "HEADER_READ_TIMEOUT_SECS",
                self.header_read_timeout_secs,
            )?),
            idle_timeout: Duration::from_secs(at_least_one("IDLE_TIMEOUT_SECS", self.idle_timeout_secs)?),
            request_timeout: Duration::from_secs(at_least_one("REQUEST_TIMEOUT_SECS", self.request_timeout_secs)?),
            max_connections: at_least_one("MAX_CONNECTIONS", self.max_connections as u64)? as usize,
        };
        let metrics_addr = socket_addr("METRICS_ADDR", self.metrics_addr.as_deref(), "127.0.0.1:9102")?;
        let store = self.store.settings()?;
        let timings = CoordTimings {
            human_takeover: Duration::from_secs(self.human_takeover_secs),
            lease: Duration::from_secs(at_least_one("HOLD_LEASE_SECS", self.hold_lease_secs)?),
            ..CoordTimings::default()
        };
        let reply_max_age = Duration::from_secs(at_least_one("REPLY_MAX_AGE_SECS", self.reply_max_age_secs)?);
        let proactive = self.proactive()?;
        let redactor = self.redact.redactor()?;
        let knowledge = self.knowledge.settings(&self.store.data_dir)?;
        let link_trust = self.link_trust()?;
        let outcomes = self.outcome.settings()?;
        Ok(Settings {
            outcomes,
            redactor,
            knowledge,
            openai: self.openai.clone(),
            trace_dir: self.trace_dir.filter(|dir| !dir.as_os_str().is_empty()),
            trace_max_files: self.trace_max_files,
            store,
            timings,
            reply_max_age,
            handoff: HandoffSettings {
                message: required_text(&self.handoff_message, "HANDOFF_MESSAGE")?,
                offline_message: required_text(&self.handoff_offline_message, "HANDOFF_OFFLINE_MESSAGE")?,
                assign_user_id: non_empty(self.handoff_assign_user_id.as_deref()),
            },
            inbox_max_messages: at_least_one("INBOX_MAX_MESSAGES", self.inbox_max_messages as u64)? as usize,
            fallback_message: non_empty(Some(&self.fallback_message)),
            history_turns: self.history_turns,
            crisp_hook_secret: non_empty(self.crisp_hook_secret.as_deref()).map(SecretString::from),
            hook_max_age: Duration::from_secs(at_least_one("HOOK_MAX_AGE_SECS", self.hook_max_age_secs)?),
            context_scope: self.context_scope,
            context_max_chars: self.context_max_chars,
            link_secret: non_empty(self.link_secret.as_deref()).map(SecretString::from),
            link_trust,
            hook_key,
            website_id,
            crisp,
            llm,
            event_data_path: self.event_data_path,
            bind_addr,
            system_prompt_path: self.system_prompt_path,
            max_concurrent_replies: self.max_concurrent_replies,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            prompt_limits,
            connections,
            metrics_addr,
            mcp_signing_secret: non_empty(self.mcp_signing_secret.as_deref()).map(SecretString::from),
            mcp_api_key: mcp_api_key(self.mcp_api_key.as_deref())?,
            mcp_signature_window: mcp_signature_window(self.mcp_signature_window_secs)?,
            proactive,
        })
    }

    /// How far links are trusted; a signed session id needs the key to check it.
    fn link_trust(&self) -> Result<LinkTrust, ConfigError> {
        if self.link_require_signed_session && non_empty(self.link_secret.as_deref()).is_none() {
            return Err(ConfigError::invalid(
                "LINK_REQUIRE_SIGNED_SESSION",
                Problem::Needs { other: "LINK_SECRET", why: "the key of autoplay_session_sig" },
            ));
        }
        Ok(LinkTrust {
            stream_conversation_id: self.trust_stream_conversation_id,
            require_signed_session: self.link_require_signed_session,
        })
    }

    /// The proactive settings; `None` when `PROACTIVE_TRIGGERS` is empty.
    fn proactive(&self) -> Result<Option<ProactiveSettings>, ConfigError> {
        let triggers = Trigger::parse_list(&self.proactive_triggers)
            .map_err(|words| ConfigError::invalid("PROACTIVE_TRIGGERS", Problem::NotAccepted(words)))?;
        if triggers.is_empty() {
            return Ok(None);
        }
        let templates = [
            (Trigger::PingPong, &self.proactive_template_ping_pong, "PROACTIVE_TEMPLATE_PING_PONG"),
            (Trigger::Dwell, &self.proactive_template_dwell, "PROACTIVE_TEMPLATE_DWELL"),
            (Trigger::Repeat, &self.proactive_template_repeat, "PROACTIVE_TEMPLATE_REPEAT"),
            (Trigger::ErrorPage, &self.proactive_template_error_page, "PROACTIVE_TEMPLATE_ERROR_PAGE"),
        ];
        let mut by_trigger = std::collections::HashMap::new();
        for (trigger, text, var) in templates {
            by_trigger.insert(trigger, required_text(text, var)?);
        }
        Ok(Some(ProactiveSettings {
            triggers,
            gate: GateSettings {
                cooldown_secs: at_least_one("PROACTIVE_COOLDOWN_SECS", self.proactive_cooldown_secs)? as f64,
                max_offers: at_least_one("PROACTIVE_MAX_OFFERS", u64::from(self.proactive_max_offers))? as u32,
            },
            max_per_minute: at_least_one("PROACTIVE_MAX_PER_MINUTE", self.proactive_max_per_minute as u64)? as usize,
            templates: by_trigger,
        }))
    }
}

/// `MCP_API_KEY`, when set: long enough not to be guessed.
fn mcp_api_key(value: Option<&str>) -> Result<Option<SecretString>, ConfigError> {
    match non_empty(value) {
        Some(key) if key.chars().count() < 16 => Err(ConfigError::invalid("MCP_API_KEY", Problem::TooShort(16))),
        key => Ok(key.map(SecretString::from)),
    }
}

/// `MCP_SIGNATURE_WINDOW_SECS`: from 1 s to Crisp's own 300 s.
fn mcp_signature_window(secs: u64) -> Result<Duration, ConfigError> {
    if !(1..=300).contains(&secs) {
        return Err(ConfigError::invalid(
            "MCP_SIGNATURE_WINDOW_SECS",
            Problem::OutOfRange { min: 1, max: 300, unit: "seconds" },
        ));
    }
    Ok(Duration::from_secs(secs))
}
