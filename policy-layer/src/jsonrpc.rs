//! JSON-RPC 2.0 parsing for MCP bodies: one strict parse, then a typed view of each message.
//!
//! The parse rejects duplicate object keys anywhere in the document, so that no difference
//! between this parser and the upstream's (first key wins vs last key wins) can smuggle a call
//! past a policy (SPEC section 10).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// JSON-RPC error code for a body that is not valid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC error code for a message that is not a valid JSON-RPC request.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC error code for a request whose params are not of the method's shape.
pub const INVALID_PARAMS: i64 = -32602;
/// Error code for a stateless (2026-07-28) request whose `Mcp-Method`/`Mcp-Name` headers
/// disagree with its body.
pub const HEADER_MISMATCH: i64 = -32020;

/// Why a body could not be read as JSON-RPC; each maps to one JSON-RPC error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all (or invalid UTF-8, or nested too deeply).
    #[error("parse error: {0}")]
    Json(String),
    /// JSON, but an object repeats a key.
    #[error("invalid request: duplicate key `{0}`")]
    DuplicateKey(String),
    /// JSON, but not a JSON-RPC message or batch.
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// A batch with more elements than allowed.
    #[error("invalid request: batch of {0} messages exceeds the limit of {1}")]
    BatchTooLarge(usize, usize),
}

impl ParseError {
    /// The JSON-RPC error code for this failure.
    #[must_use]
    pub fn code(&self) -> i64 {
        match self {
            Self::Json(_) => PARSE_ERROR,
            Self::DuplicateKey(_) | Self::Invalid(_) | Self::BatchTooLarge(..) => INVALID_REQUEST,
        }
    }
}

/// A parsed HTTP body: one message or a batch.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// Whether the body was a JSON array (the reply must then be an array too).
    pub batch: bool,
}

/// One JSON-RPC message with its classification.
#[derive(Debug, Clone)]
pub struct Message {
    /// The whole message object, as parsed.
    pub value: Map<String, Value>,
    /// What kind of message it is.
    pub kind: Kind,
}

/// The JSON-RPC message kinds the layer distinguishes.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A request: has a `method` and an `id`.
    Request {
        /// The request id, of whatever JSON type the client chose.
        id: Value,
        /// The method name.
        method: String,
    },
    /// A notification: a `method` and no `id`.
    Notification {
        /// The method name.
        method: String,
    },
    /// A response from the client to a server-initiated request.
    Response,
}

impl Message {
    /// The method name, for requests and notifications.
    #[must_use]
    pub fn method(&self) -> Option<&str> {
        match &self.kind {
            Kind::Request { method, .. } | Kind::Notification { method } => Some(method),
            Kind::Response => None,
        }
    }

    /// The request id, for requests.
    #[must_use]
    pub fn id(&self) -> Option<&Value> {
        match &self.kind {
            Kind::Request { id, .. } => Some(id),
            _ => None,
        }
    }

    /// The `params` object, if present and an object.
    #[must_use]
    pub fn params(&self) -> Option<&Map<String, Value>> {
        self.value.get("params").and_then(Value::as_object)
    }
}

/// Parses a body into JSON-RPC messages, rejecting duplicate keys and non-messages.
///
/// # Errors
/// [`ParseError`] when the body is not JSON, repeats a key, is not a JSON-RPC message or
/// batch, or is a batch longer than `max_batch`.
pub fn parse(body: &[u8], max_batch: usize) -> Result<Envelope, ParseError> {
    let value = parse_strict(body)?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(ParseError::Invalid("empty batch"));
            }
            if items.len() > max_batch {
                return Err(ParseError::BatchTooLarge(items.len(), max_batch));
            }
            let messages = items
                .into_iter()
                .map(classify)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Envelope {
                messages,
                batch: true,
            })
        }
        other => Ok(Envelope {
            messages: vec![classify(other)?],
            batch: false,
        }),
    }
}

/// Parses JSON text into a [`Value`], rejecting any object that repeats a key.
///
/// # Errors
/// [`ParseError::Json`] for invalid JSON or UTF-8, [`ParseError::DuplicateKey`] for a
/// repeated key.
pub fn parse_strict(body: &[u8]) -> Result<Value, ParseError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = StrictValue
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| {
            let text = e.to_string();
            match text.strip_prefix(DUPLICATE_PREFIX) {
                Some(rest) => {
                    ParseError::DuplicateKey(rest.split('`').next().unwrap_or_default().to_owned())
                }
                None => ParseError::Json(text),
            }
        })?;
    Ok(value)
}

fn classify(value: Value) -> Result<Message, ParseError> {
    let Value::Object(map) = value else {
        return Err(ParseError::Invalid("a JSON-RPC message must be an object"));
    };
    if map.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(ParseError::Invalid("`jsonrpc` must be \"2.0\""));
    }
    let kind = match map.get("method") {
        Some(Value::String(method)) => match map.get("id") {
            Some(id @ (Value::String(_) | Value::Number(_))) => Kind::Request {
                id: id.clone(),
                method: method.clone(),
            },
            Some(_) => return Err(ParseError::Invalid("`id` must be a string or a number")),
            None => Kind::Notification {
                method: method.clone(),
            },
        },
        Some(_) => return Err(ParseError::Invalid("`method` must be a string")),
        None if map.contains_key("id")
            && (map.contains_key("result") || map.contains_key("error")) =>
        {
            Kind::Response
        }
        None => {
            return Err(ParseError::Invalid(
                "not a request, notification or response",
            ));
        }
    };
    Ok(Message { value: map, kind })
}

const DUPLICATE_PREFIX: &str = "duplicate key `";

/// A seed that builds a [`Value`] like serde_json does, but fails on a repeated object key.
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            // One lookup: the key is hashed once.
            match map.entry(key) {
                serde_json::map::Entry::Occupied(taken) => {
                    let key = taken.key();
                    return Err(de::Error::custom(format_args!("{DUPLICATE_PREFIX}{key}`")));
                }
                serde_json::map::Entry::Vacant(slot) => {
                    slot.insert(access.next_value_seed(StrictValue)?);
                }
            }
        }
        Ok(Value::Object(map))
    }
}

/// Writes a JSON-RPC error response object.
#[must_use]
pub fn error_response(id: &Value, code: i64, message: &str) -> Value {
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": code, "message": message },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_request() {
        let env = parse(
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}"#,
            10,
        )
        .expect("parses");
        assert!(!env.batch);
        assert_eq!(env.messages[0].method(), Some("tools/call"));
        assert_eq!(env.messages[0].id(), Some(&Value::from(7)));
    }

    #[test]
    fn rejects_duplicate_key_in_nested_object() {
        let err = parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            10,
        )
        .expect_err("duplicate");
        assert_eq!(err, ParseError::DuplicateKey("name".into()));
        assert_eq!(err.code(), INVALID_REQUEST);
    }

    #[test]
    fn rejects_duplicate_key_in_arguments() {
        let err = parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"amount":1,"amount":5000}}}"#,
            10,
        )
        .expect_err("duplicate");
        assert_eq!(err, ParseError::DuplicateKey("amount".into()));
    }

    #[test]
    fn duplicate_key_made_by_escape_is_still_a_duplicate() {
        let err = parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","n\u0061me":"b"}}"#,
            10,
        )
        .expect_err("duplicate");
        assert_eq!(err, ParseError::DuplicateKey("name".into()));
    }

    #[test]
    fn malformed_json_is_a_parse_error() {
        for body in [&b"{"[..], b"", b"{\"a\":1} x", b"\xff\xfe", b"[1,]"] {
            assert_eq!(
                parse(body, 10).expect_err("bad").code(),
                PARSE_ERROR,
                "{body:?}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_a_parse_error() {
        let body = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            parse(body.as_bytes(), 10).expect_err("deep").code(),
            PARSE_ERROR
        );
    }

    #[test]
    fn non_messages_are_invalid_requests() {
        for body in [
            &br#"42"#[..],
            br#"{"id":1,"method":"x"}"#,
            br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            br#"{"jsonrpc":"2.0","id":{"a":1},"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":1}"#,
            br#"[]"#,
            br#"[1]"#,
        ] {
            assert_eq!(
                parse(body, 10).expect_err("invalid").code(),
                INVALID_REQUEST,
                "{body:?}"
            );
        }
    }

    #[test]
    fn classifies_batch_elements() {
        let env = parse(
            br#"[{"jsonrpc":"2.0","id":"a","method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":3,"result":{}}]"#,
            10,
        )
        .expect("parses");
        assert!(env.batch);
        assert!(matches!(env.messages[0].kind, Kind::Request { .. }));
        assert!(matches!(env.messages[1].kind, Kind::Notification { .. }));
        assert_eq!(env.messages[2].kind, Kind::Response);
    }

    #[test]
    fn batch_over_limit_is_rejected() {
        let one = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        let body = format!("[{}]", [one; 11].join(","));
        assert_eq!(
            parse(body.as_bytes(), 10).expect_err("too large"),
            ParseError::BatchTooLarge(11, 10)
        );
    }
}
