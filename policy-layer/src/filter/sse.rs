//! A `text/event-stream` rewriter: only the event carrying a pending tools/list response is
//! rewritten; every other event passes through byte for byte, as soon as it is complete; once
//! nothing is pending, chunks pass through as they arrive.
//!
//! Hand-written rather than an SSE crate's parser, because passing foreign events through
//! byte-exact needs the raw event text, which parsers discard.

use bytes::{Buf, Bytes, BytesMut};

use super::Rewrite;

/// Feeds upstream SSE chunks, yields the bytes to send downstream.
#[derive(Debug)]
pub struct SseRewriter {
    rewrite: Rewrite,
    buf: BytesMut,
    max_event_bytes: usize,
    started: bool,
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
        }
    }

    fn pending(&self) -> bool {
        !self.rewrite.list_ids.is_empty()
    }

    /// Takes one upstream chunk; returns what to send now (possibly nothing).
    ///
    /// # Errors
    /// [`EventTooLarge`] when an incomplete event grows past the limit while a list is
    /// pending; the pending lists have then been answered with the failure in `out`.
    pub fn feed(&mut self, chunk: Bytes) -> Result<Bytes, (Bytes, EventTooLarge)> {
        let mut out = self.start();
        if !self.pending() && self.buf.is_empty() {
            out.extend_from_slice(&chunk);
            return Ok(out.freeze());
        }
        self.buf.extend_from_slice(&chunk);
        while let Some((end, sep)) = find_boundary(&self.buf) {
            let event = self.buf.split_to(end + sep).freeze();
            if self.pending() {
                self.event(&event[..end], &event[end..], &mut out);
            } else {
                out.extend_from_slice(&event);
            }
        }
        if !self.pending() {
            out.extend_from_slice(&self.buf);
            self.buf.clear();
        } else if self.buf.len() > self.max_event_bytes {
            let failure = self.rewrite.fail_pending();
            push_event(&mut out, &[], &failure, b"\n\n");
            self.buf.clear();
            return Err((out.freeze(), EventTooLarge(self.max_event_bytes)));
        }
        Ok(out.freeze())
    }

    /// The stream ended: flush what is left; lists still pending fail closed.
    #[must_use]
    pub fn finish(&mut self) -> Bytes {
        let mut out = self.start();
        if !self.buf.is_empty() {
            let rest = self.buf.split().freeze();
            if self.pending() {
                self.event(&rest, b"", &mut out);
            } else {
                out.extend_from_slice(&rest);
            }
        }
        if self.pending() {
            let failure = self.rewrite.fail_pending();
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
            }
        }
        out
    }

    fn event(&mut self, event: &[u8], sep: &[u8], out: &mut BytesMut) {
        let mut data = String::new();
        let mut others: Vec<&[u8]> = Vec::new();
        let mut has_data = false;
        for line in event.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(value) = line.strip_prefix(b"data:") {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                if has_data {
                    data.push('\n');
                }
                has_data = true;
                data.push_str(&String::from_utf8_lossy(value));
                if std::str::from_utf8(value).is_err() {
                    // Not UTF-8: cannot be a JSON-RPC message we could check.
                    data.clear();
                    data.push('\u{fffd}');
                }
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
            Some(rewritten) => push_event(
                out,
                &others,
                &rewritten,
                if sep.is_empty() { b"\n\n" } else { sep },
            ),
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

/// The end of the first complete event and the length of its blank-line separator.
fn find_boundary(buf: &BytesMut) -> Option<(usize, usize)> {
    let bytes = buf.chunk();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'\n' {
            if bytes[i + 1] == b'\n' {
                return Some((i, 2));
            }
            if bytes[i + 1] == b'\r' && bytes.get(i + 2) == Some(&b'\n') {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::auth::Identity;
    use crate::config::Settings;
    use crate::record::NoObserver;

    fn rewriter(list_ids: Vec<Value>, local_answers: Vec<String>) -> SseRewriter {
        SseRewriter::new(
            Rewrite {
                list_ids,
                local_answers,
                batch: false,
                marked: false,
                snapshot: None,
                identity: Arc::new(Identity::anonymous()),
                settings: Arc::new(Settings::default()),
                observer: Arc::new(NoObserver),
                span: tracing::Span::none(),
            },
            1024,
        )
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
    fn oversized_event_while_pending_fails_closed() {
        let mut r = rewriter(vec![json!(1)], Vec::new());
        let big = format!("data: {}", "x".repeat(2048));
        let err = r.feed(Bytes::from(big)).expect_err("too large");
        assert!(String::from_utf8_lossy(&err.0).contains("failed for list tools"));
    }
}
