//! A `text/event-stream` rewriter: an event a client could take for a list answer is
//! rewritten (filtered), an event carrying a denied server request is dropped; every other
//! event passes through byte for byte, as soon as it is complete. Every event is read whole before it leaves, so none is longer than the limit: a
//! longer one ends the stream (fail closed), the pending lists answered with the failure.
//!
//! Hand-written rather than an SSE crate's parser, because passing foreign events through
//! byte-exact needs the raw event text, which parsers discard.

use bytes::{Bytes, BytesMut};

use super::Rewrite;

/// Feeds upstream SSE chunks, yields the bytes to send downstream.
#[derive(Debug)]
pub struct SseRewriter {
    rewrite: Rewrite,
    buf: BytesMut,
    max_event_bytes: usize,
    started: bool,
    /// Whether anything went downstream yet: a client skips a byte order mark only there.
    sent: bool,
}

/// The upstream sent an event too large to decode while a list was pending.
#[derive(Debug, thiserror::Error)]
#[error("an upstream event exceeded {0} bytes while a tools/list response was pending")]
pub struct EventTooLarge(pub usize);

impl SseRewriter {
    /// A rewriter for one response stream.
    #[must_use]
    pub fn new(rewrite: Rewrite, max_event_bytes: usize) -> Self {
        Self {
            rewrite,
            buf: BytesMut::new(),
            max_event_bytes,
            started: false,
            sent: false,
        }
    }

    fn pending(&self) -> bool {
        !self.rewrite.lists.is_empty()
    }

    /// Whether an event's bytes may hold something the filter reads, read as a client
    /// decodes them.
    fn may_concern(&self, event: &[u8]) -> bool {
        self.rewrite.may_concern(&String::from_utf8_lossy(event))
    }

    /// Takes one upstream chunk; returns what to send now (possibly nothing).
    ///
    /// # Errors
    /// [`EventTooLarge`] when an event, with the blank line that ends it, is longer than the
    /// limit (an incomplete one as soon as it cannot fit, so the outcome does not depend on
    /// how the stream is split into chunks); the pending lists have then been answered with
    /// the failure in `out`.
    pub fn feed(&mut self, chunk: Bytes) -> Result<Bytes, (Bytes, EventTooLarge)> {
        let mut out = self.start();
        self.buf.extend_from_slice(&chunk);
        let rest = loop {
            let (end, sep) = match find_boundary(&self.buf) {
                Boundary::Event { end, sep } => (end, sep),
                incomplete => break incomplete,
            };
            let event = self.buf.split_to(end + sep).freeze();
            if event.len() > self.max_event_bytes {
                return Err(self.too_large(out));
            }
            self.event(&event[..end], &event[end..], &mut out);
        };
        if self.buf.len() > self.max_event_bytes
            || (rest == Boundary::Incomplete && self.buf.len() == self.max_event_bytes)
        {
            // The shortest event these bytes can start is already too long: as they are, if
            // they may end one (a final CR), else with at least one more byte.
            return Err(self.too_large(out));
        }
        Ok(out.freeze())
    }

    /// Answers the pending lists with the failure and drops what is buffered.
    fn too_large(&mut self, mut out: BytesMut) -> (Bytes, EventTooLarge) {
        if let Some(failure) = self.rewrite.fail_pending() {
            push_event(&mut out, &[], &failure, b"\n\n");
        }
        self.buf.clear();
        (out.freeze(), EventTooLarge(self.max_event_bytes))
    }

    /// The stream ended: flush what is left; lists still pending fail closed. An unterminated
    /// last event, which a conforming client drops, passes as it came unless it may hold a
    /// list answer (a lenient client might read it): then it is filtered and ended.
    #[must_use]
    pub fn finish(&mut self) -> Bytes {
        let mut out = self.start();
        if !self.buf.is_empty() {
            let rest = self.buf.split().freeze();
            if self.pending() || self.may_concern(&rest) {
                self.event(&rest, b"", &mut out);
            } else {
                out.extend_from_slice(&rest);
            }
        }
        if let Some(failure) = self.rewrite.fail_pending() {
            push_event(&mut out, &[], &failure, b"\n\n");
        }
        out.freeze()
    }

    /// Local answers (batch denials) go out first, each as its own message event.
    fn start(&mut self) -> BytesMut {
        let mut out = BytesMut::new();
        if !self.started {
            self.started = true;
            for answer in std::mem::take(&mut self.rewrite.local_answers) {
                push_event(&mut out, &[b"event: message"], &answer, b"\n\n");
                self.sent = true;
            }
        }
        out
    }

    /// Reads one event as a client would (WHATWG event-stream rules) and writes it, with the
    /// list answer in it filtered, or as it came.
    fn event(&mut self, event: &[u8], sep: &[u8], out: &mut BytesMut) {
        let text = if self.sent || !out.is_empty() {
            event
        } else {
            event.strip_prefix(BOM).unwrap_or(event)
        };
        self.sent = true;
        // The stream ended inside this event (`finish`): end it here, or the failure that
        // follows for a list still pending would run into its last line and be lost.
        let sep = if sep.is_empty() { b"\n\n" } else { sep };
        if !self.pending() && !self.may_concern(text) {
            out.extend_from_slice(event);
            out.extend_from_slice(sep);
            return;
        }
        let mut data = String::new();
        let mut others: Vec<&[u8]> = Vec::new();
        let mut has_data = false;
        for line in lines(text) {
            if let Some(value) = line.strip_prefix(b"data:") {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                if has_data {
                    data.push('\n');
                }
                has_data = true;
                // As a client decodes the stream: bytes that are not UTF-8 read as U+FFFD
                // (which is never part of JSON's structure), and the message is checked so.
                data.push_str(&String::from_utf8_lossy(value));
            } else if !line.is_empty() {
                others.push(line);
            }
        }
        if !has_data || data.trim().is_empty() {
            out.extend_from_slice(event);
            out.extend_from_slice(sep);
            return;
        }
        match self.rewrite.message(&data) {
            // A denied server request: the event is dropped. Its other fields stay when it
            // has an `id`, so a resumed stream starts after it; without `data` a client
            // dispatches nothing.
            Some(rewritten) if rewritten.is_empty() => {
                if others.iter().any(|line| line.starts_with(b"id")) {
                    for line in &others {
                        out.extend_from_slice(line);
                        out.extend_from_slice(b"\n");
                    }
                    out.extend_from_slice(b"\n");
                }
            }
            Some(rewritten) => push_event(out, &others, &rewritten, sep),
            None => {
                out.extend_from_slice(event);
                out.extend_from_slice(sep);
            }
        }
    }
}

fn push_event(out: &mut BytesMut, others: &[&[u8]], data: &str, sep: &[u8]) {
    for line in others {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(sep);
}

/// A UTF-8 byte order mark, which a client skips at the start of the stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A line ending at the start of `bytes`: CRLF, LF or CR (WHATWG event-stream rules).
enum Ending {
    /// None here.
    No,
    /// One of this many bytes.
    Len(usize),
    /// A CR that ends the buffer: the first half of a CRLF, or a line ending of its own.
    Undecided,
}

fn ending(bytes: &[u8]) -> Ending {
    match bytes {
        [b'\n', ..] => Ending::Len(1),
        [b'\r', b'\n', ..] => Ending::Len(2),
        [b'\r'] => Ending::Undecided,
        [b'\r', ..] => Ending::Len(1),
        _ => Ending::No,
    }
}

/// Where the first event in a buffer ends, as far as its bytes tell.
#[derive(Debug, PartialEq, Eq)]
enum Boundary {
    /// It ends at `end`, followed by a separator of `sep` bytes: the line ending of its last
    /// line and the empty line after it.
    Event { end: usize, sep: usize },
    /// The buffer ends in a CR that ends the event, unless an LF follows to make the CR part
    /// of a CRLF: the event is complete as it is, or with one more byte.
    FinalCr,
    /// The event needs more bytes (the buffer may be empty).
    Incomplete,
}

/// The first complete event in `bytes`; not decided while its separator depends on a byte
/// still to come.
fn find_boundary(bytes: &[u8]) -> Boundary {
    let mut i = 0;
    while i < bytes.len() {
        match ending(&bytes[i..]) {
            Ending::No => i += 1,
            Ending::Undecided => return Boundary::Incomplete,
            Ending::Len(n) => match ending(&bytes[i + n..]) {
                Ending::Len(m) => return Boundary::Event { end: i, sep: n + m },
                Ending::Undecided => return Boundary::FinalCr,
                Ending::No => i += n,
            },
        }
    }
    Boundary::Incomplete
}

/// The lines of an event's text; CRLF, LF and CR each end a line.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        let Some(i) = text.iter().position(|b| matches!(b, b'\n' | b'\r')) else {
            rest = None;
            return Some(text);
        };
        let len = if text[i..].starts_with(b"\r\n") { 2 } else { 1 };
        rest = Some(&text[i + len..]);
        Some(&text[..i])
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn rewriter(list_ids: Vec<Value>, local_answers: Vec<String>) -> SseRewriter {
        SseRewriter::new(Rewrite::for_testing(list_ids, local_answers, None), 1024)
    }

    fn feed_all(r: &mut SseRewriter, chunks: &[&str]) -> String {
        let mut out = String::new();
        for c in chunks {
            let bytes = r
                .feed(Bytes::from(c.to_string()))
                .unwrap_or_else(|(b, _)| b);
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
        out.push_str(&String::from_utf8_lossy(&r.finish()));
        out
    }

    #[test]
    fn garbled_event_fails_the_pending_list_closed() {
        let mut r = rewriter(vec![json!(1)], Vec::new());
        let out = feed_all(
            &mut r,
            &[
                "event: message\ndata: {not json\n\n",
                "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[]}}\n\n",
            ],
        );
        assert!(
            out.contains("Policy evaluation failed for list tools"),
            "{out}"
        );
        assert!(
            !out.contains("{not json"),
            "the garbled event is never passed through: {out}"
        );
    }

    #[test]
    fn events_split_across_chunks_are_reassembled() {
        let mut r = rewriter(vec![json!(7)], Vec::new());
        let out = feed_all(
            &mut r,
            &[
                ": hi\n\nda",
                "ta: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\r\n\r\n",
            ],
        );
        assert!(
            out.starts_with(": hi\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\r\n\r\n"),
            "{out:?}"
        );
        assert!(
            out.contains("failed for list tools"),
            "a list never answered fails closed at the end: {out}"
        );
    }

    #[test]
    fn passes_through_once_nothing_is_pending() {
        let mut r = rewriter(Vec::new(), vec!["{\"local\":1}".to_owned()]);
        let out = feed_all(&mut r, &["data: partial", " event\n\n"]);
        assert_eq!(
            out,
            "event: message\ndata: {\"local\":1}\n\ndata: partial event\n\n"
        );
    }

    #[test]
    fn unterminated_last_event_is_ended_before_the_list_failure() {
        // Found by the `sse` fuzz target: the failure for the unanswered list used to be
        // appended to the unterminated line, where a client reads it as part of that line.
        let mut r = rewriter(vec![json!(1)], Vec::new());
        let out = feed_all(&mut r, &["event: message\n\ndata\"j: "]);
        assert!(
            out.starts_with("event: message\n\ndata\"j: \n\ndata: {"),
            "{out:?}"
        );
        assert!(out.contains("failed for list tools"), "{out}");
    }

    const SECRET_LIST: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"secret"}]}}"#;

    #[test]
    fn carriage_returns_end_lines_as_for_a_client() {
        // Found by the `sse` fuzz target: a lone CR ends a line and "\r\r" an event, so a
        // client read this list while the rewriter saw one line without `data:`.
        let mut r = rewriter(vec![json!(1)], Vec::new());
        let out = feed_all(
            &mut r,
            &["event: message\rdata: ", SECRET_LIST, "\r\r: next\r\r"],
        );
        assert!(!out.contains("secret"), "{out:?}");
        assert!(
            out.starts_with("event: message\ndata: {") && out.ends_with("}\r\r: next\r\r"),
            "{out:?}"
        );
    }

    #[test]
    fn server_request_reusing_a_list_id_leaves_the_list_pending() {
        // Found by the `sse` fuzz target: any message with the list's id used to settle the
        // list, so the real answer after it went through unfiltered.
        let mut r = rewriter(vec![json!(1)], Vec::new());
        let ping = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n\n";
        let out = feed_all(&mut r, &[ping, "data: ", SECRET_LIST, "\n\n"]);
        assert!(
            out.starts_with(ping),
            "the request passes as it came: {out:?}"
        );
        assert!(!out.contains("secret"), "{out:?}");
        assert_eq!(out.matches("failed for list tools").count(), 1, "{out}");
    }

    #[test]
    fn list_answers_in_a_batch_event_are_rewritten() {
        let mut r = rewriter(vec![json!(1)], Vec::new());
        let out = feed_all(&mut r, &["data: [", SECRET_LIST, "]\n\n"]);
        assert!(!out.contains("secret"), "{out:?}");
        assert!(out.starts_with("data: [{"), "{out:?}");
        assert_eq!(out.matches("failed for list tools").count(), 1, "{out}");
    }

    #[test]
    fn reply_id_equal_as_a_number_is_rewritten_too() {
        let mut r = rewriter(vec![json!(1)], Vec::new());
        let out = feed_all(
            &mut r,
            &["data: ", &SECRET_LIST.replace("1,", "1.0,"), "\n\n"],
        );
        assert!(!out.contains("secret"), "{out:?}");
    }

    #[test]
    fn byte_order_mark_at_stream_start_is_skipped_as_a_client_does() {
        let mut r = rewriter(vec![json!(1)], Vec::new());
        let out = feed_all(&mut r, &["\u{feff}data: ", SECRET_LIST, "\n\n"]);
        assert!(!out.contains("secret"), "{out:?}");
    }

    #[test]
    fn oversized_event_fails_however_the_stream_is_split() {
        let event = format!("data: {}\n\n", "x".repeat(2048));
        let mut whole = rewriter(vec![json!(1)], Vec::new());
        let (out, _) = whole
            .feed(Bytes::from(event.clone()))
            .expect_err("too large");
        let mut split = rewriter(vec![json!(1)], Vec::new());
        let (first, rest) = event.split_at(1000);
        let (out_split, _) = split
            .feed(Bytes::from(first.to_owned()))
            .and_then(|_| split.feed(Bytes::from(rest.to_owned())))
            .expect_err("too large");
        assert_eq!(out, out_split);
        assert!(String::from_utf8_lossy(&out).contains("failed for list tools"));
    }

    #[test]
    fn event_of_exactly_the_limit_ending_in_a_final_cr_fits_however_split() {
        // Found by the `sse` fuzz target: an event of exactly the limit whose separator ends
        // in a CR at the end of a chunk (`\r\n\r`, complete unless an LF follows) was
        // refused as too large, while the same bytes in one chunk were not.
        let head = "data: {\"jsonrpc\":\"2.0\",\"method\":\"note\",\"params\":{\"pad\":\"";
        let tail = "\"}}\r\n\r";
        let event = format!("{head}{}{tail}", "x".repeat(1024 - head.len() - tail.len()));
        assert_eq!(event.len(), 1024);
        let next = "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[]}}\n\n";
        let split = feed_all(&mut rewriter(vec![json!(1)], Vec::new()), &[&event, next]);
        let whole = feed_all(
            &mut rewriter(vec![json!(1)], Vec::new()),
            &[&format!("{event}{next}")],
        );
        assert_eq!(split, whole);
        assert!(
            split.starts_with(&event),
            "the event passes as it came: {split:?}"
        );
    }

    #[test]
    fn oversized_event_while_pending_fails_closed() {
        let mut r = rewriter(vec![json!(1)], Vec::new());
        let big = format!("data: {}", "x".repeat(2048));
        let err = r.feed(Bytes::from(big)).expect_err("too large");
        assert!(String::from_utf8_lossy(&err.0).contains("failed for list tools"));
    }

    fn guarded() -> SseRewriter {
        use crate::engine::{PolicyEngine, PolicySource};
        let model = crate::model::ModelConfig {
            target: "T".into(),
            gateway_id: "g".into(),
            ..crate::model::ModelConfig::default()
        };
        let policies = r#"permit(principal, action, resource);
            forbid(principal, action == AgentCore::Action::"T___secret", resource);"#;
        let engine = PolicyEngine::from_sources(model, &[PolicySource::new("p.cedar", policies)])
            .expect("policies");
        SseRewriter::new(
            Rewrite::for_testing(Vec::new(), Vec::new(), engine.snapshot()),
            1024,
        )
    }

    #[test]
    fn a_list_answer_nobody_is_waiting_for_is_filtered_too() {
        // A resumed or standalone stream: the upstream replays a list answer for an id this
        // request never sent.
        let out = feed_all(&mut guarded(), &["id: 9\ndata: ", SECRET_LIST, "\n\n"]);
        assert!(!out.contains("secret"), "{out:?}");
        assert!(out.starts_with("id: 9\ndata: {"), "{out:?}");
    }

    #[test]
    fn a_key_hidden_behind_an_escape_is_read_as_a_client_reads_it() {
        let hidden = SECRET_LIST.replace("\"tools\"", "\"tool\\u0073\"");
        let out = feed_all(&mut guarded(), &["data: ", &hidden, "\n\n"]);
        assert!(!out.contains("secret"), "{out:?}");
    }

    #[test]
    fn other_events_pass_byte_for_byte() {
        let events = "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\r\n\r\n: ping\n\n";
        assert_eq!(feed_all(&mut guarded(), &[events]), events);
    }

    #[test]
    fn an_oversized_event_ends_the_stream_though_nothing_is_pending() {
        let mut r = guarded();
        let big = format!("data: {}\n\n", "x".repeat(2048));
        let (out, _) = r.feed(Bytes::from(big)).expect_err("too large");
        assert!(
            out.is_empty(),
            "nothing of an event that cannot be checked leaves"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_read_as_a_client_decodes_them() {
        // Found by the `sse` fuzz target: a list answer with a stray byte in a key used to
        // pass unchecked, while a client decoding with replacement characters read the list.
        let mut event = b"data: {\"jsonrpc\":\"2.0\",\"x\xff\":1,\"id\":1,\"result\":".to_vec();
        event.extend_from_slice(br#"{"tools":[{"name":"secret"}]}}"#);
        event.extend_from_slice(b"\n\n");
        let mut r = guarded();
        let mut out = r.feed(Bytes::from(event)).expect("fits").to_vec();
        out.extend_from_slice(&r.finish());
        assert!(!String::from_utf8_lossy(&out).contains("secret"), "{out:?}");
    }
}
