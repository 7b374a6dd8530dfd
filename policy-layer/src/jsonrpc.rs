//! JSON-RPC 2.0 parsing for MCP bodies: one strict parse, then a typed view of each message.
//!
//! The parse rejects duplicate object keys anywhere in the document, so that no difference
//! between this parser and the upstream's (first key wins vs last key wins) can smuggle a call
//! past a policy (`docs/threat-model.md`). Each message keeps the exact bytes the client sent:
//! what is forwarded is what was decided, never a re-serialization of it, and numbers keep the
//! text the client wrote (a decimal is typed from `1000.00000000000000001`, not from the float
//! it would round to).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
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
    /// Two requests of one batch share an id (as a client matches ids: `1` and `1.0` are one),
    /// so an answer to one could settle the other.
    #[error("invalid request: id {0} appears more than once in the batch")]
    DuplicateId(String),
}

impl ParseError {
    /// The JSON-RPC error code for this failure.
    #[must_use]
    pub fn code(&self) -> i64 {
        match self {
            Self::Json(_) => PARSE_ERROR,
            Self::DuplicateKey(_)
            | Self::Invalid(_)
            | Self::BatchTooLarge(..)
            | Self::DuplicateId(_) => INVALID_REQUEST,
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

/// One JSON-RPC message with its classification and its own bytes.
#[derive(Debug, Clone)]
pub struct Message {
    /// The message as the client sent it.
    raw: Bytes,
    /// What kind of message it is.
    pub kind: Kind,
    /// `params`, when it is an object.
    params: Option<Params>,
}

/// What the layer reads of a message's `params` object; the rest stays in the raw bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    /// `params.name` (a tool or prompt), when it is a string.
    pub name: Option<String>,
    /// `params.uri` (a resource), when it is a string.
    pub uri: Option<String>,
    /// `params.arguments`, as the client wrote it (any JSON value).
    pub arguments: Option<Bytes>,
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
    pub fn params(&self) -> Option<&Params> {
        self.params.as_ref()
    }

    /// The message's bytes, exactly as the client sent them.
    #[must_use]
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// `params.arguments` as JSON text, when present.
    #[must_use]
    pub fn arguments(&self) -> Option<&str> {
        let bytes = self.params.as_ref()?.arguments.as_ref()?;
        // Checked UTF-8 when parsed; a failure here cannot happen and reads as absent.
        std::str::from_utf8(bytes).ok()
    }
}

impl Envelope {
    /// The body to forward when only the messages flagged in `keep` go on: each kept message's
    /// own bytes, in a batch array when the client sent one.
    #[must_use]
    pub fn subset(&self, keep: &[bool]) -> Bytes {
        let mut kept = self
            .messages
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(m, _)| m.raw());
        if !self.batch {
            return kept.next().cloned().unwrap_or_default();
        }
        let mut out = Vec::with_capacity(self.messages.iter().map(|m| m.raw.len() + 1).sum());
        out.push(b'[');
        for (i, raw) in kept.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(raw);
        }
        out.push(b']');
        Bytes::from(out)
    }
}

/// Parses a body into JSON-RPC messages, rejecting duplicate keys and non-messages.
///
/// # Errors
/// [`ParseError`] when the body is not JSON, repeats a key, is not a JSON-RPC message or
/// batch, or is a batch longer than `max_batch`. The error is the one [`parse_strict`] would
/// report first in the document, then the first message that is not a JSON-RPC message.
pub fn parse(body: &Bytes, max_batch: usize) -> Result<Envelope, ParseError> {
    parse_messages(body, max_batch).map_err(|error| match parse_strict(body) {
        // The document itself is bad: report its first fault, as the strict parse finds it.
        Err(first) => first,
        Ok(_) => error,
    })
}

fn parse_messages(body: &Bytes, max_batch: usize) -> Result<Envelope, ParseError> {
    let batch = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if !batch {
        let raw: &RawValue = serde_json::from_slice(body).map_err(json_error)?;
        return Ok(Envelope {
            messages: vec![message(body, raw)?],
            batch,
        });
    }
    let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(json_error)?;
    if items.is_empty() {
        return Err(ParseError::Invalid("empty batch"));
    }
    // Every element is checked for repeated keys before the batch size counts, as the strict
    // parse of the whole document would.
    let messages = items
        .iter()
        .map(|raw| message(body, raw))
        .collect::<Result<Vec<_>, _>>()?;
    if messages.len() > max_batch {
        return Err(ParseError::BatchTooLarge(messages.len(), max_batch));
    }
    let ids: Vec<&Value> = messages.iter().filter_map(Message::id).collect();
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].iter().any(|earlier| same_id(earlier, id)) {
            return Err(ParseError::DuplicateId(id.to_string()));
        }
    }
    Ok(Envelope { messages, batch })
}

/// Whether a client would take ids `a` and `b` for one: JavaScript (and Python) compare
/// numbers by value, so `1.0` is `1`.
#[must_use]
pub fn same_id(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn json_error(error: serde_json::Error) -> ParseError {
    ParseError::Json(error.to_string())
}

/// Reads one message (an element of the body) and classifies it.
fn message(body: &Bytes, raw: &RawValue) -> Result<Message, ParseError> {
    let text = raw.get();
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = (&mut de)
        .deserialize_any(Fields { body })
        .map_err(strict_error)?;
    let Some(fields) = fields else {
        return Err(ParseError::Invalid("a JSON-RPC message must be an object"));
    };
    if fields.jsonrpc.as_ref().and_then(Value::as_str) != Some("2.0") {
        return Err(ParseError::Invalid("`jsonrpc` must be \"2.0\""));
    }
    let kind = match fields.method {
        Some(Value::String(method)) => match fields.id {
            Some(id @ (Value::String(_) | Value::Number(_))) => Kind::Request { id, method },
            Some(_) => return Err(ParseError::Invalid("`id` must be a string or a number")),
            None => Kind::Notification { method },
        },
        Some(_) => return Err(ParseError::Invalid("`method` must be a string")),
        None if fields.id.is_some() && fields.answers => Kind::Response,
        None => {
            return Err(ParseError::Invalid(
                "not a request, notification or response",
            ));
        }
    };
    Ok(Message {
        raw: sub_bytes(body, text.as_bytes()),
        kind,
        params: fields.params,
    })
}

/// `part` (a slice of `body`'s bytes) as a `Bytes` sharing `body`'s buffer.
fn sub_bytes(body: &Bytes, part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if end <= body.len() => body.slice(start..end),
        // Not a slice of `body` (cannot happen: every part is parsed from it): copy it.
        _ => Bytes::copy_from_slice(part),
    }
}

/// What a message object holds that the layer reads.
#[derive(Default)]
struct MessageFields {
    jsonrpc: Option<Value>,
    id: Option<Value>,
    method: Option<Value>,
    params: Option<Params>,
    /// Whether it has a `result` or an `error`.
    answers: bool,
}

/// Reads a message object (`None` for any other JSON value), checking every value in it for
/// repeated keys.
struct Fields<'b> {
    body: &'b Bytes,
}

impl<'de> Visitor<'de> for Fields<'_> {
    type Value = Option<MessageFields>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC message")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Check.visit_seq(seq).map(|()| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut fields = MessageFields::default();
        let mut keys = Keys::default();
        while let Some(key) = access.next_key_seed(Key)? {
            keys.insert::<A::Error>(key.clone())?;
            match &*key {
                "jsonrpc" => fields.jsonrpc = Some(access.next_value_seed(StrictValue)?),
                "id" => fields.id = Some(access.next_value_seed(StrictValue)?),
                "method" => fields.method = Some(access.next_value_seed(StrictValue)?),
                "params" => {
                    fields.params = access.next_value_seed(ParamsSeed { body: self.body })?;
                }
                "result" | "error" => {
                    fields.answers = true;
                    access.next_value_seed(Check)?;
                }
                _ => access.next_value_seed(Check)?,
            }
        }
        Ok(Some(fields))
    }
}

/// Reads `params`: its name, uri and raw arguments when it is an object.
struct ParamsSeed<'b> {
    body: &'b Bytes,
}

impl<'de> DeserializeSeed<'de> for ParamsSeed<'_> {
    type Value = Option<Params>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ParamsSeed<'_> {
    type Value = Option<Params>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("params")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Check.visit_seq(seq).map(|()| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut params = Params::default();
        let mut keys = Keys::default();
        while let Some(key) = access.next_key_seed(Key)? {
            keys.insert::<A::Error>(key.clone())?;
            match &*key {
                "name" => {
                    params.name = access
                        .next_value_seed(StrictValue)?
                        .as_str()
                        .map(str::to_owned)
                }
                "uri" => {
                    params.uri = access
                        .next_value_seed(StrictValue)?
                        .as_str()
                        .map(str::to_owned)
                }
                "arguments" => {
                    let raw: &RawValue = access.next_value()?;
                    // The raw capture skipped the value: check it for repeated keys too.
                    let mut de = serde_json::Deserializer::from_str(raw.get());
                    (&mut de)
                        .deserialize_any(Check)
                        .map_err(de::Error::custom)?;
                    params.arguments = Some(sub_bytes(self.body, raw.get().as_bytes()));
                }
                _ => access.next_value_seed(Check)?,
            }
        }
        Ok(Some(params))
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// The keys seen in one object: a short list while it is short, a set beyond, so a huge object
/// costs linear time, not quadratic.
#[derive(Default)]
struct Keys<'de> {
    few: Vec<Cow<'de, str>>,
    many: Option<HashSet<Cow<'de, str>>>,
}

/// Up to this many keys are compared one by one.
const FEW_KEYS: usize = 16;

impl<'de> Keys<'de> {
    fn insert<E: de::Error>(&mut self, key: Cow<'de, str>) -> Result<(), E> {
        let repeated = match &mut self.many {
            Some(set) => set.contains(&key),
            None => self.few.contains(&key),
        };
        if repeated {
            return Err(E::custom(format_args!("{DUPLICATE_PREFIX}{key}`")));
        }
        match &mut self.many {
            Some(set) => {
                set.insert(key);
            }
            None if self.few.len() < FEW_KEYS => self.few.push(key),
            None => {
                let mut set: HashSet<Cow<'de, str>> = self.few.drain(..).collect();
                set.insert(key);
                self.many = Some(set);
            }
        }
        Ok(())
    }
}

/// Walks any JSON value without building it, failing on a repeated object key.
struct Check;

impl<'de> DeserializeSeed<'de> for Check {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Check)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        let mut keys = Keys::default();
        while let Some(key) = access.next_key_seed(Key)? {
            keys.insert::<A::Error>(key.clone())?;
            access.next_value_seed(Check)?;
        }
        Ok(())
    }
}

/// Parses JSON text into a [`Value`], rejecting any object that repeats a key.
///
/// # Errors
/// [`ParseError::Json`] for invalid JSON or UTF-8, [`ParseError::DuplicateKey`] for a
/// repeated key.
pub fn parse_strict(body: &[u8]) -> Result<Value, ParseError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    StrictValue
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(strict_error)
}

/// A serde_json error as a [`ParseError`]: a repeated key, or bad JSON.
fn strict_error(error: serde_json::Error) -> ParseError {
    let text = error.to_string();
    match text.strip_prefix(DUPLICATE_PREFIX) {
        Some(rest) => {
            ParseError::DuplicateKey(rest.split('`').next().unwrap_or_default().to_owned())
        }
        None => ParseError::Json(text),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_bytes(body: &[u8], max_batch: usize) -> Result<Envelope, ParseError> {
        parse(&Bytes::copy_from_slice(body), max_batch)
    }

    #[test]
    fn parses_single_request() {
        let env = parse_bytes(
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
        let err = parse_bytes(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            10,
        )
        .expect_err("duplicate");
        assert_eq!(err, ParseError::DuplicateKey("name".into()));
        assert_eq!(err.code(), INVALID_REQUEST);
    }

    #[test]
    fn rejects_duplicate_key_in_arguments() {
        let err = parse_bytes(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"amount":1,"amount":5000}}}"#,
            10,
        )
        .expect_err("duplicate");
        assert_eq!(err, ParseError::DuplicateKey("amount".into()));
    }

    #[test]
    fn duplicate_key_made_by_escape_is_still_a_duplicate() {
        let err = parse_bytes(
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
                parse_bytes(body, 10).expect_err("bad").code(),
                PARSE_ERROR,
                "{body:?}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_a_parse_error() {
        let body = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            parse_bytes(body.as_bytes(), 10).expect_err("deep").code(),
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
                parse_bytes(body, 10).expect_err("invalid").code(),
                INVALID_REQUEST,
                "{body:?}"
            );
        }
    }

    #[test]
    fn classifies_batch_elements() {
        let env = parse_bytes(
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
            parse_bytes(body.as_bytes(), 10).expect_err("too large"),
            ParseError::BatchTooLarge(11, 10)
        );
    }

    #[test]
    fn messages_keep_the_bytes_the_client_sent() {
        let body = br#"[ {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete\u005forder","arguments":{"amount": 1000.00000000000000001 }}} , {"jsonrpc":"2.0","method":"notifications/x"} ]"#;
        let env = parse_bytes(body, 10).expect("parses");
        let first = &env.messages[0];
        assert!(first.raw().starts_with(br#"{"jsonrpc":"2.0","id":1"#));
        assert!(first.raw().ends_with(b"}}}"));
        let params = first.params().expect("params");
        assert_eq!(params.name.as_deref(), Some("delete_order"));
        assert_eq!(
            first.arguments(),
            Some(r#"{"amount": 1000.00000000000000001 }"#)
        );
        assert_eq!(
            env.subset(&[false, true]).as_ref(),
            br#"[{"jsonrpc":"2.0","method":"notifications/x"}]"#
        );
        let both = env.subset(&[true, true]);
        assert_eq!(both.first(), Some(&b'['));
        assert!(both.ends_with(br#"},{"jsonrpc":"2.0","method":"notifications/x"}]"#));
    }

    #[test]
    fn a_single_message_is_forwarded_as_sent() {
        let body = Bytes::from_static(br#"{"jsonrpc":"2.0","id":"a","method":"ping"}"#);
        let env = parse(&body, 10).expect("parses");
        assert_eq!(env.subset(&[true]), body);
    }

    #[test]
    fn params_that_are_not_an_object_have_no_view() {
        let env = parse_bytes(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1,2]}"#,
            10,
        )
        .expect("parses");
        assert!(env.messages[0].params().is_none());
        let env = parse_bytes(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
            10,
        )
        .expect("parses");
        assert_eq!(env.messages[0].params(), Some(&Params::default()));
    }

    #[test]
    fn the_first_fault_in_the_document_is_reported() {
        // A repeated key before a syntax error, and after one.
        let err = parse_bytes(br#"[{"a":1,"a":2}, 1, {"#, 10).expect_err("bad");
        assert_eq!(err, ParseError::DuplicateKey("a".into()));
        let err = parse_bytes(br#"[1, {"a":1,"a":2}]"#, 10).expect_err("bad");
        assert_eq!(
            err,
            ParseError::DuplicateKey("a".into()),
            "before classifying"
        );
        let err = parse_bytes(
            br#"[{"jsonrpc":"2.0","method":"x","params":{"arguments":{"b":1,"b":1}}}]"#,
            0,
        )
        .expect_err("bad");
        assert_eq!(
            err,
            ParseError::DuplicateKey("b".into()),
            "before the batch size"
        );
    }

    #[test]
    fn many_keys_are_checked_in_linear_time() {
        let keys: Vec<String> = (0..20_000).map(|i| format!("\"k{i}\":{i}")).collect();
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"arguments":{{{},"k7":0}}}}}}"#,
            keys.join(",")
        );
        assert_eq!(
            parse_bytes(body.as_bytes(), 10).expect_err("repeated"),
            ParseError::DuplicateKey("k7".into())
        );
    }

    #[test]
    fn request_ids_are_unique_within_a_batch() {
        let err = parse_bytes(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":1.0,"method":"ping"}]"#,
            10,
        )
        .expect_err("same id");
        assert_eq!(err, ParseError::DuplicateId("1.0".into()));
        assert_eq!(err.code(), INVALID_REQUEST);
        // A string id is not the number, and notifications have none.
        parse_bytes(
            br#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","id":"1","method":"b"},{"jsonrpc":"2.0","method":"c"},{"jsonrpc":"2.0","method":"d"}]"#,
            10,
        )
        .expect("distinct ids");
    }
}
