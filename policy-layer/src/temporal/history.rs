//! A session's recorded events, as AgentCore's event schema defines them, and the session key.
//!
//! Each call of a session becomes events: a `request` when it is allowed (at decision time, so
//! a call still in flight counts), then a `response` (inputs and outputs) when the tool
//! answers successfully, or an `error` (inputs) when it is denied or fails. Events are stored
//! as JSON ([`Event::to_json`]) so that every replica reads the same typed values.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value as Json, json};

use super::ast::EventKind;
use super::value::Value;

/// The longest a session id may be.
pub const MAX_SESSION_ID_LEN: usize = 128;

/// The header that names a policy session.
pub const SESSION_HEADER: &str = "x-amzn-bedrock-agentcore-policy-session-id";

/// One recorded event of a session.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When it happened, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The action id (`<target>___<tool>`), in the `AgentCore::Action` type.
    pub action: Arc<str>,
    /// Request, response or error.
    pub kind: EventKind,
    /// Who made the call (`eventPrincipal`).
    pub principal: Option<Value>,
    /// The gateway it was made to (`eventResource`).
    pub resource: Option<Value>,
    /// The call's JSON-RPC id, as text (`requestId`).
    pub request_id: Option<Arc<str>>,
    /// The call's arguments, typed as `context.input` is (`input.*`).
    pub input: Option<Value>,
    /// The tool's `structuredContent` (`output.*`), on responses only.
    pub output: Option<Value>,
}

/// An event or session id that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// A stored event is not an event this version wrote.
    #[error("stored event is malformed: {0}")]
    Malformed(String),
}

impl Event {
    /// An event of `kind` for a call of `action` at `time_ms`, with no fields yet.
    #[must_use]
    pub fn new(time_ms: i64, action: &str, kind: EventKind) -> Self {
        Self {
            time_ms,
            action: Arc::from(action),
            kind,
            principal: None,
            resource: None,
            request_id: None,
            input: None,
            output: None,
        }
    }

    /// The event as JSON, lossless (types are tagged), for a store.
    #[must_use]
    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        m.insert("t".into(), json!(self.time_ms));
        m.insert("a".into(), json!(&*self.action));
        m.insert("k".into(), json!(self.kind.as_str()));
        let mut put = |key: &str, v: &Option<Value>| {
            if let Some(v) = v {
                m.insert(key.into(), tagged(v));
            }
        };
        put("p", &self.principal);
        put("r", &self.resource);
        put("i", &self.input);
        put("o", &self.output);
        if let Some(id) = &self.request_id {
            m.insert("q".into(), json!(&**id));
        }
        Json::Object(m)
    }

    /// Reads an event written by [`Event::to_json`].
    ///
    /// # Errors
    /// [`HistoryError::Malformed`] when the JSON is not such an event.
    pub fn from_json(json: &Json) -> Result<Self, HistoryError> {
        let bad = |what: &str| HistoryError::Malformed(what.to_owned());
        let m = json.as_object().ok_or_else(|| bad("not an object"))?;
        let time_ms = m
            .get("t")
            .and_then(Json::as_i64)
            .ok_or_else(|| bad("no time"))?;
        let action = m
            .get("a")
            .and_then(Json::as_str)
            .ok_or_else(|| bad("no action"))?;
        let kind = m
            .get("k")
            .and_then(Json::as_str)
            .and_then(EventKind::parse)
            .ok_or_else(|| bad("no kind"))?;
        let get = |key: &str| -> Result<Option<Value>, HistoryError> {
            m.get(key).map(untagged).transpose()
        };
        Ok(Self {
            time_ms,
            action: Arc::from(action),
            kind,
            principal: get("p")?,
            resource: get("r")?,
            request_id: m.get("q").and_then(Json::as_str).map(Arc::from),
            input: get("i")?,
            output: get("o")?,
        })
    }
}

fn tagged(v: &Value) -> Json {
    match v {
        Value::Bool(b) => json!({ "b": b }),
        Value::Long(n) => json!({ "l": n }),
        Value::Decimal(d) => json!({ "d": d }),
        Value::Str(s) => json!({ "s": &**s }),
        Value::Entity(t, id) => json!({ "e": [&**t, &**id] }),
        Value::Set(items) => json!({ "set": items.iter().map(tagged).collect::<Vec<_>>() }),
        Value::Record(fields) => {
            let m: Map<String, Json> = fields
                .iter()
                .map(|(k, v)| (k.to_string(), tagged(v)))
                .collect();
            json!({ "rec": m })
        }
    }
}

fn untagged(j: &Json) -> Result<Value, HistoryError> {
    let bad = || HistoryError::Malformed(format!("bad value {j}"));
    let m = j.as_object().ok_or_else(bad)?;
    let (tag, v) = m.iter().next().ok_or_else(bad)?;
    match tag.as_str() {
        "b" => v.as_bool().map(Value::Bool).ok_or_else(bad),
        "l" => v.as_i64().map(Value::Long).ok_or_else(bad),
        "d" => v.as_i64().map(Value::Decimal).ok_or_else(bad),
        "s" => v.as_str().map(Value::str).ok_or_else(bad),
        "e" => match v.as_array().map(Vec::as_slice) {
            Some([Json::String(t), Json::String(id)]) => Ok(Value::entity(t, id)),
            _ => Err(bad()),
        },
        "set" => v
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(untagged)
            .collect::<Result<Vec<_>, _>>()
            .map(Value::set),
        "rec" => v
            .as_object()
            .ok_or_else(bad)?
            .iter()
            .map(|(k, v)| untagged(v).map(|v| (Arc::from(k.as_str()), v)))
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map(Value::Record),
        _ => Err(bad()),
    }
}

/// A policy session id, as the caller sent it in [`SESSION_HEADER`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(Arc<str>);

/// A session header that is not 1 to 128 of `[A-Za-z0-9-]` (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{SESSION_HEADER} must be 1 to {MAX_SESSION_ID_LEN} characters of A-Z, a-z, 0-9 and -")]
pub struct BadSessionId;

impl SessionId {
    /// Checks a header value: 1 to 128 characters of `[A-Za-z0-9-]`. Never reflect a value
    /// that fails this check.
    ///
    /// # Errors
    /// [`BadSessionId`] for anything else (the caller answers HTTP 400).
    pub fn parse(header: &[u8]) -> Result<Self, BadSessionId> {
        if header.is_empty()
            || header.len() > MAX_SESSION_ID_LEN
            || !header
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        {
            return Err(BadSessionId);
        }
        // Checked ASCII just above.
        std::str::from_utf8(header)
            .map(|s| Self(Arc::from(s)))
            .map_err(|_| BadSessionId)
    }

    /// The id.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a session is keyed by: the caller's identity and the session id, so two callers
/// sending the same id get separate sessions (AgentCore's rule).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// The caller's principal, as its Cedar uid text (`AgentCore::OAuthUser::"alice"`).
    pub principal: Arc<str>,
    /// The session id.
    pub session: SessionId,
}

impl SessionKey {
    /// A store key: unambiguous (the principal is length-prefixed) and printable.
    #[must_use]
    pub fn storage_key(&self) -> String {
        format!(
            "{}:{}:{}",
            self.principal.len(),
            self.principal,
            self.session
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_json_with_their_types() {
        let mut e = Event::new(1_000, "T___transfer", EventKind::Response);
        e.principal = Some(Value::entity("AgentCore::OAuthUser", "alice"));
        e.resource = Some(Value::entity("AgentCore::Gateway", "gw"));
        e.request_id = Some(Arc::from("7"));
        e.input = Some(Value::Record(BTreeMap::from([
            (Arc::from("amount"), Value::Long(5)),
            (Arc::from("rate"), Value::Decimal(12_500)),
            (
                Arc::from("tags"),
                Value::set(vec![Value::str("a"), Value::Bool(true)]),
            ),
        ])));
        e.output = Some(Value::Record(BTreeMap::new()));
        let back = Event::from_json(&e.to_json()).expect("round trip");
        assert_eq!(back, e);
        assert!(Event::from_json(&json!({"t": 1})).is_err());
    }

    #[test]
    fn session_ids_are_one_to_128_letters_digits_or_hyphens() {
        assert!(SessionId::parse(b"12345678-1234-1234-1234-123456789012").is_ok());
        assert!(SessionId::parse(&[b'a'; 128]).is_ok());
        assert_eq!(SessionId::parse(&[b'a'; 129]), Err(BadSessionId));
        assert_eq!(SessionId::parse(b""), Err(BadSessionId));
        assert_eq!(SessionId::parse(b"a b"), Err(BadSessionId));
        assert_eq!(SessionId::parse(b"a_b"), Err(BadSessionId));
        assert_eq!(SessionId::parse("é".as_bytes()), Err(BadSessionId));
    }

    #[test]
    fn session_keys_separate_callers_sharing_an_id() {
        let id = SessionId::parse(b"s1").expect("id");
        let alice = SessionKey {
            principal: Arc::from("AgentCore::OAuthUser::\"alice\""),
            session: id.clone(),
        };
        let bob = SessionKey {
            principal: Arc::from("AgentCore::OAuthUser::\"bob\""),
            session: id,
        };
        assert_ne!(alice.storage_key(), bob.storage_key());
    }
}
