//! `jsonrpc::parse` and `parse_strict` on arbitrary bytes.
//!
//! Invariants: no panic; the strict parse accepts exactly what `serde_json` accepts, less the
//! documents that repeat a key, and yields the same value; `parse` accepts exactly the
//! JSON-RPC messages and batches among those, within the batch limit and with distinct
//! request ids; each message keeps exactly its own bytes, and its view of `params` (name, uri,
//! raw arguments) is what those bytes say; every error carries a JSON-RPC error code.

#![no_main]

use libfuzzer_sys::fuzz_target;
use policy_layer::jsonrpc::{self, INVALID_REQUEST, Kind, PARSE_ERROR, ParseError};
use serde_json::Value;

/// Batch limits tried on every input: none allowed, one, and a typical limit.
const LIMITS: [usize; 3] = [0, 1, 10];

fuzz_target!(|body: &[u8]| {
    let strict = jsonrpc::parse_strict(body);
    let lenient = serde_json::from_slice::<Value>(body);
    match (&strict, &lenient) {
        (Ok(value), Ok(reference)) => {
            assert_eq!(value, reference, "strict and serde_json values differ");
            // What was accepted prints and reads back (a float may come back one ulp off:
            // serde_json's default float parsing is not correctly rounded).
            let text = serde_json::to_vec(value).expect("a parsed value prints");
            if let Err(e) = jsonrpc::parse_strict(&text) {
                panic!("printed value does not read back: {e}");
            }
        }
        (Ok(_), Err(e)) => panic!("strict parse accepted what serde_json rejects: {e}"),
        // A repeated key is the only thing the strict parse refuses beyond serde_json.
        (Err(e), Ok(_)) => assert!(
            matches!(e, ParseError::DuplicateKey(_)),
            "strict parse refused valid JSON without a repeated key: {e}"
        ),
        (Err(e), Err(_)) => assert!(
            matches!(e, ParseError::Json(_) | ParseError::DuplicateKey(_)),
            "invalid JSON reported as {e:?}"
        ),
    }
    if let Err(e) = &strict {
        let expected = match e {
            ParseError::Json(_) => PARSE_ERROR,
            _ => INVALID_REQUEST,
        };
        assert_eq!(e.code(), expected, "{e:?}");
    }

    let mut accepted_below = false;
    for limit in LIMITS {
        let parsed = jsonrpc::parse(&bytes::Bytes::copy_from_slice(body), limit);
        match (&parsed, &strict) {
            (Err(e), _) => {
                assert!(
                    e.code() == PARSE_ERROR || e.code() == INVALID_REQUEST,
                    "{e:?} has code {}",
                    e.code()
                );
                if let Err(s) = &strict {
                    assert_eq!(e, s, "parse and parse_strict disagree on the error");
                }
                // A larger batch limit never refuses what a smaller one accepted.
                assert!(
                    !accepted_below,
                    "limit {limit} refused a smaller limit's batch"
                );
            }
            (Ok(_), Err(e)) => panic!("parse accepted what parse_strict refuses: {e}"),
            (Ok(envelope), Ok(value)) => {
                accepted_below = true;
                check_envelope(envelope, value, limit);
            }
        }
    }
});

/// The envelope is the value's messages, each classified by its own fields.
fn check_envelope(envelope: &jsonrpc::Envelope, value: &Value, limit: usize) {
    let items: Vec<&Value> = match value {
        Value::Array(items) => {
            assert!(envelope.batch);
            assert!(!items.is_empty() && items.len() <= limit, "batch size");
            items.iter().collect()
        }
        other => {
            assert!(!envelope.batch);
            vec![other]
        }
    };
    assert_eq!(envelope.messages.len(), items.len());
    let ids: Vec<&Value> = envelope.messages.iter().filter_map(|m| m.id()).collect();
    for (i, id) in ids.iter().enumerate() {
        assert!(
            !ids[..i].iter().any(|e| jsonrpc::same_id(e, id)),
            "a batch with a repeated id {id} was accepted"
        );
    }
    for (message, item) in envelope.messages.iter().zip(items) {
        let Value::Object(map) = item else {
            panic!("a non-object was accepted as a message: {item}");
        };
        let own: Value = serde_json::from_slice(message.raw()).expect("a message is JSON");
        assert_eq!(&own, item, "a message's bytes are not the message");
        match (message.params(), map.get("params")) {
            (Some(params), Some(Value::Object(p))) => {
                assert_eq!(params.name.as_deref(), p.get("name").and_then(Value::as_str));
                assert_eq!(params.uri.as_deref(), p.get("uri").and_then(Value::as_str));
                let arguments = message
                    .arguments()
                    .map(|a| serde_json::from_str::<Value>(a).expect("arguments are JSON"));
                assert_eq!(arguments.as_ref(), p.get("arguments"));
            }
            (None, Some(Value::Object(_))) => panic!("params is an object but has no view"),
            (Some(_), _) => panic!("a view of params that are not an object"),
            (None, _) => {}
        }
        assert_eq!(map.get("jsonrpc"), Some(&Value::from("2.0")));
        match &message.kind {
            Kind::Request { id, method } => {
                assert_eq!(map.get("id"), Some(id));
                assert!(id.is_string() || id.is_number(), "request id {id}");
                assert_eq!(map.get("method").and_then(Value::as_str), Some(&**method));
            }
            Kind::Notification { method } => {
                assert!(!map.contains_key("id"));
                assert_eq!(map.get("method").and_then(Value::as_str), Some(&**method));
            }
            Kind::Response => {
                assert!(!map.contains_key("method"));
                assert!(map.contains_key("id"));
                assert!(map.contains_key("result") || map.contains_key("error"));
            }
        }
    }
}
