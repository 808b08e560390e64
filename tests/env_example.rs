//! The `.env.example` a new user copies must be accepted as it is, once the required values are
//! filled in: optional settings left empty there count as unset.

use std::process::Command;

const ENV_EXAMPLE: &str = include_str!("../.env.example");

fn filled_env_example() -> String {
    let mut text = String::new();
    for line in ENV_EXAMPLE.lines() {
        let line = match line {
            "WEBHOOK_SECRET=" => "WEBHOOK_SECRET=s3cret",
            "CRISP_TOKEN_IDENTIFIER=" => "CRISP_TOKEN_IDENTIFIER=ident",
            "CRISP_TOKEN_KEY=" => "CRISP_TOKEN_KEY=key",
            "WEBSITE_ID=" => "WEBSITE_ID=site",
            "OPENAI_API_KEY=" => "OPENAI_API_KEY=sk-test",
            "STREAM_URL=" => "STREAM_URL=http://127.0.0.1:1/stream/prod",
            // Nothing listens there: the checks fail fast, the configuration must not.
            l if l.starts_with("OPENAI_BASE_URL=") => "OPENAI_BASE_URL=http://127.0.0.1:1/v1",
            l if l.starts_with("CRISP_API_BASE_URL=") => "CRISP_API_BASE_URL=http://127.0.0.1:1/v1",
            other => other,
        };
        text.push_str(line);
        text.push('\n');
    }
    text
}

#[test]
fn a_filled_in_env_example_is_a_valid_configuration() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), filled_env_example()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_webhook"))
        .arg("--check")
        .current_dir(dir.path())
        .env_clear()
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.starts_with("ok      configuration: valid\n"), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("FAILED  OpenAI"), "the unreachable stand-in fails its check: {stdout}");
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn every_setting_of_the_webhook_is_in_env_example() {
    let help = Command::new(env!("CARGO_BIN_EXE_webhook")).arg("--help").env_clear().output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for var in help.split("[env: ").skip(1).filter_map(|rest| rest.split([']', '=']).next()) {
        assert!(ENV_EXAMPLE.contains(&format!("\n{var}=")), "{var} is missing from .env.example");
    }
}

#[test]
fn every_setting_of_the_listener_is_in_env_example() {
    let help = Command::new(env!("CARGO_BIN_EXE_listener")).arg("--help").env_clear().output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let vars: Vec<&str> = help.split("[env: ").skip(1).filter_map(|rest| rest.split([']', '=']).next()).collect();
    assert!(vars.contains(&"STREAM_URL"), "{help}");
    for var in vars {
        assert!(ENV_EXAMPLE.contains(&format!("\n{var}=")), "{var} is missing from .env.example");
    }
}
