//! `--check`: reach each outside service once and say, one line each, whether it works.

use crate::config::StoreSettings;
use crate::crisp::CrispClient;
use crate::llm::LlmClient;
use crate::redis_conn::RedisConn;
use std::future::Future;
use std::time::Duration;

/// One check's outcome: what was checked, and a detail either way.
pub struct Check {
    pub name: &'static str,
    pub outcome: Result<String, String>,
}

/// Runs a check with a time limit.
pub async fn run<F: Future<Output = Result<String, String>>>(name: &'static str, check: F) -> Check {
    let outcome = match tokio::time::timeout(Duration::from_secs(15), check).await {
        Ok(outcome) => outcome,
        Err(_) => Err("no answer within 15 s".into()),
    };
    Check { name, outcome }
}

/// Prints one line per check; returns whether all passed.
pub fn report(checks: &[Check]) -> bool {
    for check in checks {
        match &check.outcome {
            Ok(detail) => println!("ok      {}: {detail}", check.name),
            Err(detail) => println!("FAILED  {}: {detail}", check.name),
        }
    }
    checks.iter().all(|c| c.outcome.is_ok())
}

pub async fn llm(client: &LlmClient) -> Check {
    run("OpenAI", async {
        client.check().await.map(|()| format!("key accepted, model {}", client.model())).map_err(|e| e.to_string())
    })
    .await
}

pub async fn crisp(client: &CrispClient) -> Check {
    run("Crisp", async {
        client
            .check_website()
            .await
            .map(|()| format!("token can read website {}", client.website_id()))
            .map_err(|e| format!("{e}; check CRISP_TOKEN_IDENTIFIER, CRISP_TOKEN_KEY, CRISP_TIER and WEBSITE_ID"))
    })
    .await
}

/// Redis, when `REDIS_URL` is set; `None` otherwise.
pub async fn redis(store: &StoreSettings) -> Option<Check> {
    let conn = match store.connect_redis() {
        Ok(conn) => conn?,
        Err(e) => return Some(Check { name: "Redis", outcome: Err(e.to_string()) }),
    };
    Some(ping(&conn).await)
}

async fn ping(conn: &RedisConn) -> Check {
    run("Redis", async {
        let mut con = conn.connection();
        let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut con).await;
        pong.map(|_| "PING answered".to_owned()).map_err(|e| format!("no answer ({})", e.category()))
    })
    .await
}
