//! Prints how each line of standard input (or the arguments) is redacted.
use std::io::BufRead;

fn main() {
    let r = privacy::Redactor::from_env().expect("settings");
    let mut map = privacy::Placeholders::new();
    let lines: Vec<String> = if std::env::args().len() > 1 {
        std::env::args().skip(1).collect()
    } else {
        std::io::stdin().lock().lines().map_while(Result::ok).collect()
    };
    for line in lines {
        println!("{line}\n  -> {}", r.redact(&line, &mut map));
    }
}
