//! The SSE rewriter on an upstream event stream split into chunks at fuzzer-chosen points.
//!
//! The input is the stream with a byte 0xFF wherever a chunk ends (0xFF never occurs in UTF-8
//! text, so a seed is the stream as the upstream would send it). Two tools/list requests are
//! pending (ids `1` and `"l2"`), one local answer goes out first, and the policies deny the tool
//! `secret`. Invariants:
//! - no panic;
//! - the output, and whether the stream failed on an oversized event, do not depend on how the
//!   input is split (the whole stream as one chunk gives the same bytes);
//! - read as a conforming SSE client reads it (the WHATWG event-stream rules: CR, LF and CRLF
//!   end lines, a leading BOM is skipped, an unterminated last event is dropped), the output
//!   starts with the local answer, no list answer (whatever its id: a list nobody asked for
//!   too) lists `secret`, and every pending list is answered, also when the stream failed.

#![no_main]

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use policy_layer::engine::{PolicyEngine, PolicySource, Snapshot};
use policy_layer::filter::Rewrite;
use policy_layer::filter::sse::SseRewriter;
use policy_layer::model::ModelConfig;
use serde_json::{Value, json};

const SPLIT: u8 = 0xFF;
const MAX_EVENT_BYTES: usize = 256;
const LOCAL_ANSWER: &str = r#"{"jsonrpc":"2.0","id":9,"error":{"code":-32002,"message":"denied"}}"#;
const POLICIES: &str = r#"
permit(principal, action, resource);
forbid(principal, action == AgentCore::Action::"T___secret", resource);
"#;

static SNAPSHOT: LazyLock<Arc<Snapshot>> = LazyLock::new(|| {
    let model = ModelConfig {
        target: "T".into(),
        gateway_id: "g".into(),
        ..ModelConfig::default()
    };
    PolicyEngine::from_sources(model, &[PolicySource::new("fuzz.cedar", POLICIES)])
        .expect("the fixed policies load")
        .snapshot()
        .expect("a snapshot")
});

fn pending() -> Vec<Value> {
    vec![json!(1), json!("l2")]
}

/// What the client receives: the bytes, and whether the stream ended on the size error.
#[derive(Debug, PartialEq)]
struct Received {
    bytes: Vec<u8>,
    failed: bool,
}

/// Feeds the chunks as the response body does: it stops after the error's output.
fn receive<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Received {
    let rewrite = Rewrite::for_testing(
        pending(),
        vec![LOCAL_ANSWER.to_owned()],
        Some(Arc::clone(&SNAPSHOT)),
    );
    let mut rewriter = SseRewriter::new(rewrite, MAX_EVENT_BYTES);
    let mut bytes = Vec::new();
    for chunk in chunks {
        match rewriter.feed(Bytes::copy_from_slice(chunk)) {
            Ok(out) => bytes.extend_from_slice(&out),
            Err((out, _)) => {
                bytes.extend_from_slice(&out);
                return Received {
                    bytes,
                    failed: true,
                };
            }
        }
    }
    bytes.extend_from_slice(&rewriter.finish());
    Received {
        bytes,
        failed: false,
    }
}

fuzz_target!(|data: &[u8]| {
    let whole: Vec<u8> = data.iter().copied().filter(|b| *b != SPLIT).collect();
    let split = receive(data.split(|b| *b == SPLIT));
    let one = receive(std::iter::once(&whole[..]));
    assert_eq!(
        String::from_utf8_lossy(&split.bytes),
        String::from_utf8_lossy(&one.bytes),
        "the output depends on the chunking"
    );
    assert_eq!(
        split.failed, one.failed,
        "the size error depends on the chunking"
    );

    let events = client_events(&one.bytes);
    assert_eq!(
        events.first().map(String::as_str),
        Some(LOCAL_ANSWER),
        "the local answer goes first"
    );
    // Two clients: one matches ids by value (JavaScript: `1.0` answers `1`), one by their
    // JSON type too. Each takes the first reply to a list as its answer; a request from the
    // server (`method`) answers nothing.
    let pending = pending();
    let mut by_value = vec![false; pending.len()];
    let mut exact = vec![false; pending.len()];
    for data in &events {
        let Ok(value) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        let replies = match &value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for reply in replies {
            let Some(id) = reply_id(reply) else {
                continue;
            };
            assert_filtered(reply);
            let settles = reply.get("method").is_none();
            for (i, p) in pending.iter().enumerate() {
                let loose = same_id(id, p) && !by_value[i];
                let strict = id == p && !exact[i];
                if loose || strict {
                    assert_filtered(reply);
                }
                by_value[i] |= loose && settles;
                exact[i] |= strict && settles;
            }
        }
    }
    assert!(
        exact.iter().chain(&by_value).all(|a| *a),
        "a pending list was never answered: {:?}",
        String::from_utf8_lossy(&one.bytes)
    );
});

/// The id of a reply a client might take for a response: it has a `result` or an `error`.
fn reply_id(reply: &Value) -> Option<&Value> {
    let map = reply.as_object()?;
    if !(map.contains_key("result") || map.contains_key("error")) {
        return None;
    }
    map.get("id")
}

/// Ids as a JavaScript client matches them: `1` and `1.0` are the same id.
fn same_id(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A list the client accepts lists named tools only, and never `secret`.
fn assert_filtered(reply: &Value) {
    let Some(tools) = reply.pointer("/result/tools").and_then(Value::as_array) else {
        return;
    };
    for tool in tools {
        let name = tool.get("name").and_then(Value::as_str);
        assert!(
            name.is_some_and(|n| n != "secret"),
            "a tool the policies deny reached the client: {reply}"
        );
    }
}

/// The data of each event a conforming client dispatches, in order (WHATWG HTML, "Parsing an
/// event stream").
fn client_events(stream: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(stream);
    let mut rest = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut events = Vec::new();
    let mut data = String::new();
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        let terminator = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + terminator..];
        if line.is_empty() {
            if !data.is_empty() {
                data.pop(); // the last data line's LF
                events.push(std::mem::take(&mut data));
            }
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        if field == "data" {
            data.push_str(value);
            data.push('\n');
        }
    }
    events
}
