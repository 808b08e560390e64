//! Articles: reading Markdown, HTML and text into one shape, and cutting them into passages.

use sha2::{Digest, Sha256};

/// Format of an article's source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
    Text,
}

impl Format {
    /// From a file extension (`md`, `markdown`, `html`, `htm`, `txt`), case-insensitive.
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "md" | "markdown" => Some(Self::Markdown),
            "html" | "htm" => Some(Self::Html),
            "txt" => Some(Self::Text),
            _ => None,
        }
    }
}

/// One article, normalised: `body` is plain text whose section headings are Markdown
/// heading lines (`## Export`), whatever the source format was.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Stable id: `file:<relative path>` or `crisp:<locale>:<article>`.
    pub id: String,
    pub title: String,
    pub link: Option<String>,
    pub body: String,
    /// Content hash (hex SHA-256 of title, link and body): what a refresh compares.
    pub hash: String,
}

/// A piece of an article: the text under one heading (long sections are cut further).
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    pub article_id: String,
    pub title: String,
    pub link: Option<String>,
    /// Title then the headings above the passage, e.g. `["Billing", "Export invoices"]`.
    pub heading_path: Vec<String>,
    pub text: String,
    /// Position in the article.
    pub ordinal: usize,
}

impl Passage {
    /// `Billing › Export invoices`.
    pub fn heading_path_string(&self) -> String {
        self.heading_path.join(" › ")
    }

    /// Stable key of this passage's content (used for its embedding).
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.article_id.as_bytes());
        h.update([0]);
        h.update(self.heading_path_string().as_bytes());
        h.update([0]);
        h.update(self.text.as_bytes());
        h.update(self.ordinal.to_le_bytes());
        hex::encode(&h.finalize()[..16])
    }
}

/// Longest passage body in characters before a section is cut at paragraph breaks.
pub const MAX_PASSAGE_CHARS: usize = 1_500;

impl Document {
    /// Builds an article from its raw text. `fallback_title` (e.g. the file name) is used when
    /// neither a front-matter `title` nor a first heading gives one; `link` is replaced by a
    /// front-matter `url` when there is one.
    pub fn parse(id: String, raw: &str, format: Format, fallback_title: &str, link: Option<String>) -> Self {
        let (front, rest) = split_front_matter(raw);
        let fm = |key: &str| {
            front.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.clone()).filter(|v| !v.is_empty())
        };
        let (heading_title, body) = match format {
            Format::Markdown => {
                let body = markdown_to_text(rest);
                (first_heading(&body), body)
            }
            Format::Html => {
                let (title_tag, body) = html_to_text(rest);
                (first_heading(&body).or(title_tag), body)
            }
            Format::Text => (None, rest.replace("\r\n", "\n")),
        };
        let title = fm("title").or(heading_title).unwrap_or_else(|| fallback_title.to_owned());
        let link = fm("url").or(link);
        Self::new(id, title, link, body)
    }

    /// An article from already-normalised parts.
    pub fn new(id: String, title: String, link: Option<String>, body: String) -> Self {
        let mut h = Sha256::new();
        for part in [title.as_str(), link.as_deref().unwrap_or(""), body.as_str()] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let hash = hex::encode(h.finalize());
        Self { id, title, link, body, hash }
    }

    /// Cuts the article at its headings. Each passage carries the article's title, link and the
    /// heading path above it; a level-1 heading equal to the title is not repeated in the path.
    pub fn passages(&self) -> Vec<Passage> {
        let mut out = Vec::new();
        let mut stack: Vec<(usize, String)> = Vec::new();
        let mut buf = String::new();
        let mut in_fence = false;
        let flush = |stack: &Vec<(usize, String)>, buf: &mut String, out: &mut Vec<Passage>| {
            let text = buf.trim();
            if !text.is_empty() {
                let mut path = vec![self.title.clone()];
                for (level, h) in stack {
                    if *level == 1 && h.eq_ignore_ascii_case(&self.title) {
                        continue;
                    }
                    path.push(h.clone());
                }
                for chunk in chunk_text(text, MAX_PASSAGE_CHARS) {
                    out.push(Passage {
                        article_id: self.id.clone(),
                        title: self.title.clone(),
                        link: self.link.clone(),
                        heading_path: path.clone(),
                        text: chunk,
                        ordinal: out.len(),
                    });
                }
            }
            buf.clear();
        };
        for line in self.body.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
                in_fence = !in_fence;
            }
            if !in_fence && let Some((level, heading)) = heading_line(line) {
                flush(&stack, &mut buf, &mut out);
                while stack.last().is_some_and(|(l, _)| *l >= level) {
                    stack.pop();
                }
                stack.push((level, heading));
                continue;
            }
            buf.push_str(line);
            buf.push('\n');
        }
        flush(&stack, &mut buf, &mut out);
        out
    }
}

/// `## Export invoices` → `(2, "Export invoices")`.
fn heading_line(line: &str) -> Option<(usize, String)> {
    let hashes = line.bytes().take_while(|b| *b == b'#').count();
    if hashes == 0 || hashes > 6 {
        return None;
    }
    let rest = &line[hashes..];
    if !rest.starts_with(' ') && !rest.starts_with('\t') {
        return None;
    }
    let text = rest.trim().trim_end_matches('#').trim();
    (!text.is_empty()).then(|| (hashes, text.to_owned()))
}

fn first_heading(body: &str) -> Option<String> {
    body.lines().find_map(heading_line).map(|(_, h)| h)
}

/// Cuts `text` into pieces of at most about `max` characters at blank lines (then at line ends).
fn chunk_text(text: &str, max: usize) -> Vec<String> {
    if text.chars().count() <= max {
        return vec![text.to_owned()];
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    for para in text.split("\n\n") {
        let para = para.trim();
        if para.is_empty() {
            continue;
        }
        if !cur.is_empty() && cur.chars().count() + para.chars().count() + 2 > max {
            out.push(std::mem::take(&mut cur));
        }
        if para.chars().count() > max {
            // One huge paragraph: cut at char boundaries.
            let chars: Vec<char> = para.chars().collect();
            for piece in chars.chunks(max) {
                out.push(piece.iter().collect());
            }
            continue;
        }
        if !cur.is_empty() {
            cur.push_str("\n\n");
        }
        cur.push_str(para);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Splits a leading `---` block of `key: value` lines from the rest.
pub fn split_front_matter(raw: &str) -> (Vec<(String, String)>, &str) {
    let raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
    let Some(after) = raw.strip_prefix("---\n").or_else(|| raw.strip_prefix("---\r\n")) else {
        return (Vec::new(), raw);
    };
    let mut offset = 0;
    let mut pairs = Vec::new();
    for line in after.split_inclusive('\n') {
        offset += line.len();
        let l = line.trim_end();
        if l == "---" || l == "..." {
            return (pairs, &after[offset..]);
        }
        if let Some((k, v)) = l.split_once(':') {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            pairs.push((k.trim().to_owned(), v.to_owned()));
        }
    }
    // No closing line: not front matter.
    (Vec::new(), raw)
}

/// Light Markdown clean-up: links and images keep their text, emphasis and code marks go,
/// heading lines stay (they cut passages).
pub fn markdown_to_text(md: &str) -> String {
    let mut out = String::with_capacity(md.len());
    for line in md.replace("\r\n", "\n").lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            continue;
        }
        out.push_str(&strip_inline_markdown(line));
        out.push('\n');
    }
    out
}

fn strip_inline_markdown(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        // [text](url) and ![alt](url)
        if c == '[' || (c == '!' && chars.get(i + 1) == Some(&'[')) {
            let start = if c == '!' { i + 2 } else { i + 1 };
            if let Some(close) = chars[start..].iter().position(|&c| c == ']').map(|p| p + start)
                && chars.get(close + 1) == Some(&'(')
                && let Some(end) = chars[close + 2..].iter().position(|&c| c == ')').map(|p| p + close + 2)
            {
                out.extend(&chars[start..close]);
                i = end + 1;
                continue;
            }
        }
        if c == '`' || ((c == '*' || c == '_') && chars.get(i + 1) == Some(&c)) {
            i += if c == '`' { 1 } else { 2 };
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// HTML to text: scripts, styles and comments dropped, tags stripped, block elements end lines,
/// `<h1>`…`<h6>` become Markdown heading lines, list items `- `, entities decoded. Returns the
/// `<title>` too.
pub fn html_to_text(html: &str) -> (Option<String>, String) {
    let lower = html.to_ascii_lowercase();
    let bytes = html.as_bytes();
    let mut out = String::with_capacity(html.len() / 2);
    let mut title: Option<String> = None;
    let mut i = 0;
    let mut text_start = 0;
    let mut pending_heading: Option<usize> = None;
    let mut in_title = false;
    let mut title_buf = String::new();
    while i < bytes.len() {
        if bytes[i] != b'<' {
            i += 1;
            continue;
        }
        // Text before the tag.
        let text = decode_entities(&html[text_start..i]);
        if in_title {
            title_buf.push_str(&text);
        } else {
            push_inline(&mut out, &text);
        }
        if lower[i..].starts_with("<!--") {
            i = lower[i..].find("-->").map(|p| i + p + 3).unwrap_or(bytes.len());
            text_start = i;
            continue;
        }
        let Some(end) = html[i..].find('>').map(|p| i + p) else {
            text_start = i;
            break;
        };
        let tag = &lower[i + 1..end];
        let closing = tag.starts_with('/');
        let name: String = tag.trim_start_matches('/').chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        i = end + 1;
        text_start = i;
        match name.as_str() {
            "script" | "style" | "noscript" | "template" | "svg" if !closing => {
                let close = format!("</{name}");
                i = lower[i..].find(&close).map(|p| i + p).unwrap_or(bytes.len());
                i = html[i..].find('>').map(|p| i + p + 1).unwrap_or(bytes.len());
                text_start = i;
            }
            "title" => {
                if closing {
                    in_title = false;
                    let t = collapse_ws(&title_buf);
                    if !t.is_empty() && title.is_none() {
                        title = Some(t);
                    }
                } else {
                    in_title = true;
                    title_buf.clear();
                }
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                let level = (name.as_bytes()[1] - b'0') as usize;
                end_line(&mut out);
                if closing {
                    if let Some(start) = pending_heading.take() {
                        let heading = collapse_ws(&out[start..]);
                        out.truncate(start);
                        if !heading.is_empty() {
                            out.push_str(&"#".repeat(level));
                            out.push(' ');
                            out.push_str(&heading);
                        }
                        out.push('\n');
                    }
                } else {
                    out.push('\n');
                    pending_heading = Some(out.len());
                }
            }
            "li" if !closing => {
                end_line(&mut out);
                out.push_str("- ");
            }
            "br" => out.push('\n'),
            "p" | "div" | "section" | "article" | "ul" | "ol" | "li" | "tr" | "table" | "blockquote" | "pre"
            | "header" | "footer" | "main" | "nav" | "dd" | "dt" | "hr" => {
                end_line(&mut out);
                if name == "p" || name == "table" || name == "pre" {
                    out.push('\n');
                }
            }
            "td" | "th" => out.push(' '),
            _ => {}
        }
    }
    if text_start < bytes.len() {
        push_inline(&mut out, &decode_entities(&html[text_start..]));
    }
    // Tidy: trim lines, at most one blank line in a row.
    let mut tidy = String::with_capacity(out.len());
    let mut blank = 0;
    for line in out.lines() {
        let l = line.trim();
        if l.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        tidy.push_str(l);
        tidy.push('\n');
    }
    (title, tidy.trim().to_owned())
}

fn push_inline(out: &mut String, text: &str) {
    let t = collapse_ws(text);
    if t.is_empty() {
        if text.chars().any(char::is_whitespace) && !out.ends_with([' ', '\n']) && !out.is_empty() {
            out.push(' ');
        }
        return;
    }
    if text.starts_with(char::is_whitespace) && !out.ends_with([' ', '\n']) && !out.is_empty() {
        out.push(' ');
    }
    out.push_str(&t);
    if text.ends_with(char::is_whitespace) {
        out.push(' ');
    }
}

fn end_line(out: &mut String) {
    while out.ends_with(' ') {
        out.pop();
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
}

fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decodes the common named entities and numeric ones; unknown entities stay as written.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = rest.find('&') {
        out.push_str(&rest[..p]);
        rest = &rest[p..];
        let Some(semi) = rest[..rest.len().min(12)].find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let ent = &rest[1..semi];
        let decoded = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some(' '),
            "mdash" => Some('—'),
            "ndash" => Some('–'),
            "hellip" => Some('…'),
            "rsquo" | "lsquo" => Some('\''),
            "ldquo" | "rdquo" => Some('"'),
            _ if ent.starts_with("#x") || ent.starts_with("#X") => {
                u32::from_str_radix(&ent[2..], 16).ok().and_then(char::from_u32)
            }
            _ if ent.starts_with('#') => ent[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_title_link_and_heading_paths() {
        let raw = "---\ntitle: \"Billing\"\nurl: https://help.example.com/billing\n---\n# Billing overview\n\nIntro text.\n\n## Export invoices\n\nGo to [Settings](https://x/y) and click **Export**.\n\n### CSV\n\nCSV details.\n";
        let d = Document::parse("file:billing.md".into(), raw, Format::Markdown, "billing", None);
        assert_eq!(d.title, "Billing");
        assert_eq!(d.link.as_deref(), Some("https://help.example.com/billing"));
        let p = d.passages();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].heading_path_string(), "Billing › Billing overview");
        assert_eq!(p[1].heading_path_string(), "Billing › Billing overview › Export invoices");
        assert!(p[1].text.contains("Go to Settings and click Export."), "{}", p[1].text);
        assert_eq!(p[2].heading_path_string(), "Billing › Billing overview › Export invoices › CSV");
    }

    #[test]
    fn title_falls_back_to_heading_then_file_name() {
        let d = Document::parse("a".into(), "# Team members\n\n## Invite\n\nx", Format::Markdown, "team", None);
        assert_eq!(d.title, "Team members");
        assert_eq!(d.passages()[0].heading_path_string(), "Team members › Invite");
        let d = Document::parse("b".into(), "just text", Format::Text, "plain file", None);
        assert_eq!(d.title, "plain file");
    }

    #[test]
    fn html_is_text_without_scripts_and_keeps_headings() {
        let html = "<html><head><title>SSO setup</title><style>h1{color:red}</style><script>alert('x<y')</script></head>\
            <body><h1>Single sign-on</h1><p>Use SAML &amp; OIDC.</p><!-- hidden --><h2>Okta</h2><ul><li>One</li><li>Two</li></ul></body></html>";
        let (title, text) = html_to_text(html);
        assert_eq!(title.as_deref(), Some("SSO setup"));
        assert!(!text.contains("alert") && !text.contains("color") && !text.contains("hidden"), "{text}");
        assert!(text.contains("# Single sign-on\n"), "{text}");
        assert!(text.contains("Use SAML & OIDC."), "{text}");
        assert!(text.contains("## Okta\n"), "{text}");
        assert!(text.contains("- One\n- Two"), "{text}");
        let d = Document::parse("c".into(), html, Format::Html, "f", None);
        assert_eq!(d.title, "Single sign-on");
    }

    #[test]
    fn long_sections_are_cut() {
        let para = "word ".repeat(100);
        let body = format!("# T\n\n{}", [para.trim(); 10].join("\n\n"));
        let d = Document::new("x".into(), "T".into(), None, body);
        let p = d.passages();
        assert!(p.len() > 2);
        assert!(p.iter().all(|p| p.text.chars().count() <= MAX_PASSAGE_CHARS));
    }
}
