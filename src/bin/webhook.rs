//! The webhook: `webhook::App`, run by the shared `main` (settings, `--check`, logs, signals).

fn main() {
    agent_core::process::main::<webhook::App>()
}
