//! Passages for the prompt, delimited as data.

use crate::Hit;

/// Escapes `&`, `<`, `>` and `"` so that text can neither close an `<article>` tag nor open a
/// new element or attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            // Control characters other than newline and tab carry nothing useful.
            c if c.is_control() && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Formats hits as
///
/// ```text
/// <article title="Billing" url="https://…" section="Billing › Export invoices">
/// …passage text, escaped…
/// </article>
/// ```
///
/// Title, URL, section and text are escaped (`&`, `<`, `>`, `"`), so an article cannot close its
/// delimiter, forge another article or add attributes: whatever it says stays data inside its own
/// tags. The result is at most `max_chars` characters: passages are taken in order, the last one
/// that fits only partly is cut (ending with `…`), and the rest are left out.
pub fn format_passages(hits: &[Hit], max_chars: usize) -> String {
    const CLOSE: &str = "</article>\n";
    const MIN_TEXT: usize = 40;
    let mut out = String::new();
    let mut used = 0usize;
    for hit in hits {
        let mut open = format!("<article title=\"{}\"", escape(truncate_chars(&hit.title, 200)));
        if let Some(link) = &hit.link {
            open.push_str(&format!(" url=\"{}\"", escape(truncate_chars(link, 300))));
        }
        if !hit.heading_path.is_empty() && hit.heading_path != hit.title {
            open.push_str(&format!(" section=\"{}\"", escape(truncate_chars(&hit.heading_path, 300))));
        }
        open.push_str(">\n");
        let overhead = open.chars().count() + CLOSE.len() + 1;
        let room = max_chars.saturating_sub(used);
        if room < overhead + MIN_TEXT {
            break;
        }
        let text = escape(hit.text.trim());
        let budget = room - overhead;
        let body = if text.chars().count() <= budget {
            text
        } else {
            // Cut without splitting an escape sequence.
            let mut cut = truncate_chars(&text, budget - 1).to_owned();
            if let Some(amp) = cut.rfind('&')
                && !cut[amp..].contains(';')
            {
                cut.truncate(amp);
            }
            cut.push('…');
            cut
        };
        let piece = format!("{open}{body}\n{CLOSE}");
        used += piece.chars().count();
        out.push_str(&piece);
    }
    out
}
