//! The listener: `listener::App`, run by the shared `main` (settings, `--check`, logs, signals).

fn main() {
    plumbing::process::main::<listener::App>()
}
