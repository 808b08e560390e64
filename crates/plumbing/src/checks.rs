//! `--check`: reach each outside service once and say, one line each, whether it works. The
//! probes live with their clients (`llm::probe`, `crisp::probe`, `activity::config::probe_redis`).

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

/// Redis answers a `PING`.
pub async fn redis_ping(conn: &RedisConn) -> Check {
    run("Redis", async {
        let mut con = conn.connection();
        let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut con).await;
        pong.map(|_| "PING answered".to_owned()).map_err(|e| format!("no answer ({})", e.category()))
    })
    .await
}
