//! Incremental Server-Sent Events parser (WHATWG rules) over raw bytes.
//!
//! Written by hand instead of using `eventsource-stream` because that crate stalls forever on one
//! invalid UTF-8 byte and re-scans its buffer on every chunk (quadratic on long lines). This parser
//! works on bytes, validates UTF-8 per frame (a bad frame is reported and skipped, the stream goes
//! on), accepts CR, LF and CRLF even when split across chunks, and bounds its memory: a line or a
//! frame longer than the limits is dropped whole, never buffered.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, `message` when absent.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Why a frame was dropped by the parser itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    InvalidUtf8,
    LineTooLong,
    FrameTooLong,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SkipReason::InvalidUtf8 => "invalid UTF-8",
            SkipReason::LineTooLong => "line over the size limit",
            SkipReason::FrameTooLong => "frame over the size limit",
        })
    }
}

/// What the parser yields for each complete frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    Event(SseEvent),
    /// A frame that could not be used; `excerpt` is its first bytes, lossily decoded, for the log.
    Skipped {
        reason: SkipReason,
        excerpt: String,
    },
}

/// Largest single line kept (1 MiB): the connector sends one JSON object per line, far smaller.
pub const DEFAULT_MAX_LINE: usize = 1 << 20;
/// Largest frame (all `data:` lines together) kept.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;
const EXCERPT_BYTES: usize = 200;

#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    event: Vec<u8>,
    /// Set when the previous chunk ended in CR: a leading LF in the next chunk belongs to it.
    after_cr: bool,
    /// The current line overflowed: ignore bytes until its end.
    discarding_line: bool,
    /// The current frame is unusable; reported once at its end.
    poisoned: Option<SkipReason>,
    excerpt: Vec<u8>,
    at_stream_start: bool,
    max_line: usize,
    max_frame: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::with_limits(DEFAULT_MAX_LINE, DEFAULT_MAX_FRAME)
    }
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_limits(max_line: usize, max_frame: usize) -> Self {
        Self {
            line: Vec::new(),
            data: Vec::new(),
            event: Vec::new(),
            after_cr: false,
            discarding_line: false,
            poisoned: None,
            excerpt: Vec::new(),
            at_stream_start: true,
            max_line,
            max_frame,
        }
    }

    /// Feeds one chunk; complete frames are appended to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<SseItem>) {
        if self.at_stream_start && !chunk.is_empty() {
            // A UTF-8 BOM may open the stream; it can itself be split across chunks.
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            let seen = self.line.len();
            let take = (BOM.len() - seen).min(chunk.len());
            if BOM[seen..seen + take] == chunk[..take] {
                self.line.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
                if self.line.len() < BOM.len() {
                    return;
                }
                self.line.clear();
            } else {
                // Not a BOM after all: the bytes held back are ordinary line bytes.
            }
            self.at_stream_start = false;
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while !chunk.is_empty() {
            match memchr::memchr2(b'\r', b'\n', chunk) {
                None => {
                    self.extend_line(chunk);
                    return;
                }
                Some(pos) => {
                    let whole_line = &chunk[..pos];
                    // A line wholly inside this chunk is read in place (no copy), unless it is
                    // too long: then the copying path poisons the frame.
                    let in_place = self.line.is_empty() && !self.discarding_line && pos <= self.max_line;
                    if !in_place {
                        self.extend_line(whole_line);
                    }
                    let ended_with_cr = chunk[pos] == b'\r';
                    chunk = &chunk[pos + 1..];
                    if ended_with_cr {
                        match chunk.first() {
                            Some(b'\n') => chunk = &chunk[1..],
                            None => self.after_cr = true,
                            Some(_) => {}
                        }
                    }
                    if in_place {
                        self.complete_line(whole_line, out);
                    } else {
                        self.end_line(out);
                    }
                }
            }
        }
    }

    /// Bytes currently held (for memory bound checks in tests).
    pub fn buffered_bytes(&self) -> usize {
        self.line.len() + self.data.len() + self.event.len() + self.excerpt.len()
    }

    fn extend_line(&mut self, bytes: &[u8]) {
        if self.discarding_line {
            return;
        }
        if self.line.len() + bytes.len() > self.max_line {
            self.discarding_line = true;
            self.remember_excerpt(&self.line.clone());
            self.remember_excerpt(bytes);
            self.line.clear();
            self.line.shrink_to(4096);
            self.poison(SkipReason::LineTooLong);
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn remember_excerpt(&mut self, bytes: &[u8]) {
        let room = EXCERPT_BYTES.saturating_sub(self.excerpt.len());
        self.excerpt.extend_from_slice(&bytes[..room.min(bytes.len())]);
    }

    fn poison(&mut self, reason: SkipReason) {
        if self.poisoned.is_none() {
            self.poisoned = Some(reason);
        }
    }

    fn end_line(&mut self, out: &mut Vec<SseItem>) {
        if self.discarding_line {
            self.discarding_line = false;
            return;
        }
        let line = std::mem::take(&mut self.line);
        self.complete_line(&line, out);
        // Reuse the allocation unless one huge line left it big.
        self.line = line;
        self.line.clear();
        if self.line.capacity() > 64 * 1024 {
            self.line.shrink_to(4096);
        }
    }

    /// A whole line: an empty one ends the frame, any other is a field.
    fn complete_line(&mut self, line: &[u8], out: &mut Vec<SseItem>) {
        if line.is_empty() {
            self.dispatch(out);
        } else {
            self.process_field(line);
        }
    }

    fn process_field(&mut self, line: &[u8]) {
        if line[0] == b':' {
            return; // comment
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.poisoned.is_some() {
                    return;
                }
                if self.data.len() + value.len() + 1 > self.max_frame {
                    self.remember_excerpt(&self.data.clone());
                    self.data.clear();
                    self.data.shrink_to(4096);
                    self.poison(SkipReason::FrameTooLong);
                    return;
                }
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(&value[..value.len().min(256)]);
            }
            // `id` and `retry` exist in the protocol but Autoplay offers no resumption.
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseItem>) {
        if let Some(reason) = self.poisoned.take() {
            if self.excerpt.is_empty() {
                let data = self.data.clone();
                self.remember_excerpt(&data);
            }
            out.push(SseItem::Skipped { reason, excerpt: String::from_utf8_lossy(&self.excerpt).into_owned() });
        } else if !self.data.is_empty() {
            self.data.pop(); // the trailing LF
            // The frame's buffer becomes the event's text (validated, not copied); the next
            // frame starts in a new one of about the same size.
            let next = Vec::with_capacity(self.data.len().min(64 * 1024));
            let data = std::mem::replace(&mut self.data, next);
            match (String::from_utf8(data), std::str::from_utf8(&self.event)) {
                (Ok(data), Ok(event)) => out.push(SseItem::Event(SseEvent {
                    event: if event.is_empty() { "message".to_owned() } else { event.to_owned() },
                    data,
                })),
                (data, _) => {
                    let data = data.map_or_else(|e| e.into_bytes(), String::into_bytes);
                    self.remember_excerpt(&data);
                    out.push(SseItem::Skipped {
                        reason: SkipReason::InvalidUtf8,
                        excerpt: String::from_utf8_lossy(&self.excerpt).into_owned(),
                    });
                }
            }
        }
        self.data.clear();
        if self.data.capacity() > 64 * 1024 {
            self.data.shrink_to(4096);
        }
        self.event.clear();
        self.excerpt.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseItem> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk, &mut out);
        }
        out
    }

    fn event(event: &str, data: &str) -> SseItem {
        SseItem::Event(SseEvent { event: event.into(), data: data.into() })
    }

    const FIXTURES: &[&[u8]] = &[
        include_bytes!("../../../tests/fixtures/autoplay/actions-full.sse"),
        include_bytes!("../../../tests/fixtures/autoplay/actions-legacy-minimal.sse"),
        include_bytes!("../../../tests/fixtures/autoplay/heartbeat.sse"),
        include_bytes!("../../../tests/fixtures/autoplay/ignored-and-malformed.sse"),
        include_bytes!("../../../tests/fixtures/autoplay/summary.sse"),
    ];

    fn all_fixtures() -> Vec<u8> {
        FIXTURES.concat()
    }

    #[test]
    fn parses_the_fixture_stream() {
        let items = parse_chunks(&[&all_fixtures()]);
        let names: Vec<_> = items
            .iter()
            .map(|i| match i {
                SseItem::Event(e) => e.event.clone(),
                SseItem::Skipped { .. } => "skipped".into(),
            })
            .collect();
        assert_eq!(names, ["message", "message", "heartbeat", "message", "message", "message", "actions", "message"]);
        // The heartbeat carries empty data: the spec dispatches it with "" data.
        assert_eq!(items[2], event("heartbeat", ""));
        assert_eq!(items[4], event("message", "not-json"));
    }

    #[test]
    fn handles_cr_lf_and_crlf_line_endings() {
        let items = parse_chunks(&[b"data: a\r\rdata: b\n\ndata: c\r\n\r\nevent: x\rdata:d\r\n\n"]);
        assert_eq!(items, [event("message", "a"), event("message", "b"), event("message", "c"), event("x", "d")]);
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_ending() {
        let items = parse_chunks(&[b"data: a\r", b"\n", b"\r", b"\ndata: b\n\n"]);
        assert_eq!(items, [event("message", "a"), event("message", "b")]);
    }

    #[test]
    fn joins_multi_line_data_and_ignores_comments_and_ids() {
        let items = parse_chunks(&[b": hi\nid: 7\nretry: 10\ndata: one\ndata:two\ndata\n\n"]);
        assert_eq!(items, [event("message", "one\ntwo\n")]);
    }

    #[test]
    fn invalid_utf8_skips_one_frame_and_keeps_going() {
        let items = parse_chunks(&[b"data: \xff\xfe bad\n\ndata: good\n\n"]);
        assert!(matches!(&items[0], SseItem::Skipped { reason: SkipReason::InvalidUtf8, .. }));
        assert_eq!(items[1], event("message", "good"));
    }

    #[test]
    fn utf8_sequence_split_across_chunks_is_kept() {
        let text = "data: caf\u{e9} \u{2014} ok\n\n".as_bytes();
        let split = text.iter().position(|&b| b == 0xC3).unwrap() + 1;
        let items = parse_chunks(&[&text[..split], &text[split..]]);
        assert_eq!(items, [event("message", "caf\u{e9} \u{2014} ok")]);
    }

    #[test]
    fn a_two_megabyte_line_is_skipped_with_bounded_memory() {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        parser.push(b"data: ", &mut out);
        let block = vec![b'x'; 64 * 1024];
        for _ in 0..32 {
            parser.push(&block, &mut out);
            assert!(parser.buffered_bytes() <= DEFAULT_MAX_LINE + 1024);
        }
        parser.push(b"\n\ndata: next\n\n", &mut out);
        assert!(
            matches!(&out[0], SseItem::Skipped { reason: SkipReason::LineTooLong, excerpt } if excerpt.len() == 200)
        );
        assert_eq!(out[1], event("message", "next"));
        assert!(parser.buffered_bytes() < 8192);
    }

    #[test]
    fn many_data_lines_over_the_frame_limit_are_skipped() {
        let mut parser = SseParser::with_limits(1024, 4096);
        let mut out = Vec::new();
        for _ in 0..100 {
            parser.push(b"data: 0123456789012345678901234567890123456789012345678901234567890123456789\n", &mut out);
        }
        parser.push(b"\ndata: ok\n\n", &mut out);
        assert!(matches!(&out[0], SseItem::Skipped { reason: SkipReason::FrameTooLong, .. }));
        assert_eq!(out[1], event("message", "ok"));
    }

    #[test]
    fn a_leading_bom_is_dropped_even_when_split() {
        let items = parse_chunks(&[b"\xEF", b"\xBB\xBFdata: x\n\n"]);
        assert_eq!(items, [event("message", "x")]);
    }

    #[test]
    fn an_incomplete_frame_at_end_of_stream_is_not_dispatched() {
        assert!(parse_chunks(&[b"data: partial\n"]).is_empty());
    }

    proptest! {
        #[test]
        fn any_chunking_of_the_fixtures_yields_the_same_items(cuts in proptest::collection::vec(0usize..4000, 0..40)) {
            let stream = all_fixtures();
            let whole = parse_chunks(&[&stream]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for cut in cuts {
                chunks.push(&stream[start..cut]);
                start = cut;
            }
            chunks.push(&stream[start..]);
            prop_assert_eq!(parse_chunks(&chunks), whole);
        }

        #[test]
        fn crlf_and_cr_versions_of_the_fixtures_parse_alike(cut in 0usize..4000) {
            let lf = all_fixtures();
            let crlf: Vec<u8> = String::from_utf8(lf.clone()).unwrap().replace('\n', "\r\n").into_bytes();
            let cut = cut % (crlf.len() + 1);
            prop_assert_eq!(parse_chunks(&[&crlf[..cut], &crlf[cut..]]), parse_chunks(&[&lf]));
        }

        #[test]
        fn random_bytes_never_panic_and_stay_bounded(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..512), 0..32)) {
            let mut parser = SseParser::with_limits(256, 1024);
            let mut out = Vec::new();
            for chunk in &chunks {
                parser.push(chunk, &mut out);
                prop_assert!(parser.buffered_bytes() <= 256 + 1024 + 256 + 200 + 2);
            }
        }
    }
}
