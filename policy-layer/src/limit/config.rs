//! `[[rate_limit]]`: the raw serde form, which mirrors the TOML, and its validation into typed
//! [`RateLimit`]s.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;

/// Most parts one key may have.
pub const MAX_KEY_PARTS: usize = 8;
/// Largest `rate`.
pub const MAX_RATE: u64 = 1_000_000_000;
/// Longest limit id.
pub const MAX_ID_BYTES: usize = 128;

/// One `[[rate_limit]]` table as written in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Names the limit in errors, metrics and logs.
    pub id: String,
    /// One tool (its upstream name); absent: every tool.
    #[serde(default)]
    pub tool: Option<String>,
    /// What is counted separately: `jwt.<claim>`, `header.<name>`, `body.<dotted path>`.
    #[serde(default)]
    pub key: Vec<String>,
    /// `requests` (default) or `connections`.
    #[serde(default)]
    pub metric: Option<String>,
    /// Calls per `per`, or calls in flight at once; 0 blocks.
    pub rate: u64,
    /// `second` or `minute` (requests only).
    #[serde(default)]
    pub per: Option<String>,
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Calls per period.
    Requests(Per),
    /// Calls in flight at once.
    Connections,
}

impl Metric {
    /// `requests` or `connections`, as in the config and the throttled reply.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests(_) => "requests",
            Self::Connections => "connections",
        }
    }
}

/// The period of a requests limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Per {
    /// One second.
    Second,
    /// One minute.
    Minute,
}

impl Per {
    /// The period's length.
    #[must_use]
    pub fn duration(self) -> Duration {
        match self {
            Self::Second => Duration::from_secs(1),
            Self::Minute => Duration::from_secs(60),
        }
    }
}

/// One part of a limit's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart {
    /// `jwt.sub`: the verified subject.
    Subject,
    /// `jwt.<claim>`: another claim of the verified token, as a string (as Cedar tags see it).
    Claim(Box<str>),
    /// `header.<name>`: a request header (every value, joined by `, `).
    Header(HeaderName),
    /// `body.<dotted path>`: a value in the `tools/call` arguments.
    Body(Box<[Box<str>]>),
}

impl KeyPart {
    /// Whether the caller writes this part as it likes (a header or an argument).
    #[must_use]
    pub fn caller_written(&self) -> bool {
        matches!(self, Self::Header(_) | Self::Body(_))
    }

    fn parse(text: &str) -> Result<Self, String> {
        let (source, rest) = text.split_once('.').unwrap_or((text, ""));
        match source {
            "jwt" if rest.is_empty() => Err("jwt.<claim> needs a claim name".to_owned()),
            "jwt" if rest == "sub" => Ok(Self::Subject),
            "jwt" => Ok(Self::Claim(rest.into())),
            "header" => HeaderName::from_bytes(rest.to_ascii_lowercase().as_bytes())
                .map(Self::Header)
                .map_err(|_| "header.<name> needs a valid header name".to_owned()),
            "body" => {
                let path: Box<[Box<str>]> = rest.split('.').map(Box::from).collect();
                if path.iter().any(|segment| segment.is_empty()) {
                    Err("body.<dotted path> needs non-empty path segments".to_owned())
                } else {
                    Ok(Self::Body(path))
                }
            }
            _ => Err("expected jwt.<claim>, header.<name> or body.<dotted path>".to_owned()),
        }
    }
}

impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Subject => f.write_str("jwt.sub"),
            Self::Claim(claim) => write!(f, "jwt.{claim}"),
            Self::Header(name) => write!(f, "header.{name}"),
            Self::Body(path) => write!(f, "body.{}", path.join(".")),
        }
    }
}

/// One validated rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Its id.
    pub id: Arc<str>,
    /// The one tool it applies to, or every tool.
    pub tool: Option<Arc<str>>,
    /// What is counted separately (empty: one counter for every caller).
    pub key: Box<[KeyPart]>,
    /// What is counted.
    pub metric: Metric,
    /// The rate (0 blocks).
    pub rate: u32,
}

/// A `[[rate_limit]]` that cannot be used; the message names the limit and the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate_limit {limit}: {field}{message}")]
pub struct LimitConfigError {
    limit: String,
    field: String,
    message: String,
}

impl LimitConfigError {
    fn new(limit: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        Self {
            limit: limit.to_owned(),
            field: if field.is_empty() {
                field
            } else {
                format!("{field}: ")
            },
            message: message.into(),
        }
    }
}

/// Every `[[rate_limit]]` of a config, validated; build [`super::Limits`] from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitSet {
    limits: Vec<RateLimit>,
}

impl LimitSet {
    /// Validates every table.
    ///
    /// # Errors
    /// The first table that cannot be used, naming its id (or its position when the id itself
    /// is at fault) and the key.
    pub fn from_config(tables: &[RateLimitConfig]) -> Result<Self, LimitConfigError> {
        let mut seen = HashSet::new();
        let mut limits = Vec::with_capacity(tables.len());
        for (index, table) in tables.iter().enumerate() {
            let limit = validate(table, index)?;
            if !seen.insert(Arc::clone(&limit.id)) {
                return Err(LimitConfigError::new(
                    &format!("\"{}\"", limit.id),
                    "id",
                    "is used by an earlier limit; ids must be unique",
                ));
            }
            limits.push(limit);
        }
        Ok(Self { limits })
    }

    /// The limits, in config order.
    #[must_use]
    pub fn limits(&self) -> &[RateLimit] {
        &self.limits
    }

    /// Whether there is no limit.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }
}

impl From<Vec<RateLimit>> for LimitSet {
    /// A set of limits built in code; ids must be unique (a later duplicate is dropped).
    fn from(limits: Vec<RateLimit>) -> Self {
        let mut seen = HashSet::new();
        Self {
            limits: limits
                .into_iter()
                .filter(|l| seen.insert(Arc::clone(&l.id)))
                .collect(),
        }
    }
}

fn validate(table: &RateLimitConfig, index: usize) -> Result<RateLimit, LimitConfigError> {
    let id = table.id.as_str();
    let valid_id = !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid_id {
        return Err(LimitConfigError::new(
            &format!("#{}", index + 1),
            "id",
            format!(
                "\"{id}\" must be 1 to {MAX_ID_BYTES} letters, digits, '-', '_' or '.' (it starts every limit key)"
            ),
        ));
    }
    let name = format!("\"{id}\"");
    let tool = match &table.tool {
        Some(tool) if tool.is_empty() => {
            return Err(LimitConfigError::new(
                &name,
                "tool",
                "must not be empty (leave it out for every tool)",
            ));
        }
        tool => tool.as_deref().map(Arc::from),
    };
    if table.key.len() > MAX_KEY_PARTS {
        return Err(LimitConfigError::new(
            &name,
            "key",
            format!("at most {MAX_KEY_PARTS} parts"),
        ));
    }
    let mut key = Vec::with_capacity(table.key.len());
    for text in &table.key {
        let part = KeyPart::parse(text)
            .map_err(|message| LimitConfigError::new(&name, format!("key \"{text}\""), message))?;
        if key.contains(&part) {
            return Err(LimitConfigError::new(
                &name,
                format!("key \"{text}\""),
                "appears twice",
            ));
        }
        key.push(part);
    }
    if key.iter().any(KeyPart::caller_written) && !key.iter().any(|p| !p.caller_written()) {
        return Err(LimitConfigError::new(
            &name,
            "key",
            "header and body parts are written by the caller: combine them with a jwt.<claim> part (as AgentCore requires), or a caller escapes the limit by changing them",
        ));
    }
    let per = table
        .per
        .as_deref()
        .map(|per| match per.to_ascii_lowercase().as_str() {
            "second" => Ok(Per::Second),
            "minute" => Ok(Per::Minute),
            _ => Err(LimitConfigError::new(
                &name,
                "per",
                format!("expected one of second, minute, got \"{per}\""),
            )),
        })
        .transpose()?;
    let metric = match table
        .metric
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("requests") => Metric::Requests(per.ok_or_else(|| {
            LimitConfigError::new(
                &name,
                "per",
                "is required for metric \"requests\" (second or minute)",
            )
        })?),
        Some("connections") => {
            if per.is_some() {
                return Err(LimitConfigError::new(
                    &name,
                    "per",
                    "applies to metric \"requests\" only; connections counts calls in flight",
                ));
            }
            Metric::Connections
        }
        Some(_) => {
            return Err(LimitConfigError::new(
                &name,
                "metric",
                format!(
                    "expected one of requests, connections, got \"{}\"",
                    table.metric.as_deref().unwrap_or_default()
                ),
            ));
        }
    };
    if table.rate > MAX_RATE {
        return Err(LimitConfigError::new(
            &name,
            "rate",
            format!("at most {MAX_RATE}"),
        ));
    }
    Ok(RateLimit {
        id: Arc::from(id),
        tool,
        key: key.into(),
        metric,
        rate: u32::try_from(table.rate).unwrap_or(u32::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        rate_limit: Vec<RateLimitConfig>,
    }

    fn load(text: &str) -> Result<LimitSet, LimitConfigError> {
        let file: File = toml::from_str(text).expect("toml");
        LimitSet::from_config(&file.rate_limit)
    }

    fn error(text: &str) -> String {
        load(text).expect_err("invalid").to_string()
    }

    #[test]
    fn reads_the_documented_limit() {
        let set = load(
            r#"
[[rate_limit]]
id = "refunds-per-user"     # names the limit in errors, metrics, logs
tool = "process_refund"
key = ["jwt.sub"]
metric = "requests"
rate = 5
per = "minute"
"#,
        )
        .expect("valid");
        assert_eq!(
            set.limits(),
            &[RateLimit {
                id: "refunds-per-user".into(),
                tool: Some("process_refund".into()),
                key: vec![KeyPart::Subject].into(),
                metric: Metric::Requests(Per::Minute),
                rate: 5,
            }]
        );
    }

    #[test]
    fn reads_every_key_source_and_connections() {
        let set = load(
            r#"
[[rate_limit]]
id = "calls-in-flight"
key = ["jwt.tenant", "header.X-Workload", "body.order.customer_id"]
metric = "connections"
rate = 2
"#,
        )
        .expect("valid");
        let limit = &set.limits()[0];
        assert_eq!(limit.metric, Metric::Connections);
        assert_eq!(limit.tool, None);
        assert_eq!(
            limit
                .key
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["jwt.tenant", "header.x-workload", "body.order.customer_id"]
        );
    }

    #[test]
    fn rejects_unknown_fields_in_a_limit() {
        let file: Result<File, _> =
            toml::from_str("[[rate_limit]]\nid = \"a\"\nrate = 1\nper = \"second\"\nburst = 3\n");
        let message = file.err().expect("unknown field").to_string();
        assert!(message.contains("unknown field `burst`"), "{message}");
    }

    #[test]
    fn errors_name_the_limit_and_the_key() {
        assert_eq!(
            error("[[rate_limit]]\nid = \"a\"\nkey = [\"jwt.\"]\nrate = 1\nper = \"second\""),
            "rate_limit \"a\": key \"jwt.\": jwt.<claim> needs a claim name"
        );
        assert_eq!(
            error("[[rate_limit]]\nid = \"a\"\nkey = [\"cookie.x\"]\nrate = 1\nper = \"second\""),
            "rate_limit \"a\": key \"cookie.x\": expected jwt.<claim>, header.<name> or body.<dotted path>"
        );
        assert_eq!(
            error(
                "[[rate_limit]]\nid = \"a\"\nkey = [\"jwt.sub\", \"body.a..b\"]\nrate = 1\nper = \"second\""
            ),
            "rate_limit \"a\": key \"body.a..b\": body.<dotted path> needs non-empty path segments"
        );
        assert_eq!(
            error(
                "[[rate_limit]]\nid = \"a\"\nkey = [\"jwt.sub\", \"jwt.sub\"]\nrate = 1\nper = \"second\""
            ),
            "rate_limit \"a\": key \"jwt.sub\": appears twice"
        );
        assert_eq!(
            error("[[rate_limit]]\nid = \"a\"\nrate = 1"),
            "rate_limit \"a\": per: is required for metric \"requests\" (second or minute)"
        );
        assert_eq!(
            error("[[rate_limit]]\nid = \"a\"\nrate = 1\nper = \"hour\""),
            "rate_limit \"a\": per: expected one of second, minute, got \"hour\""
        );
        assert_eq!(
            error(
                "[[rate_limit]]\nid = \"a\"\nrate = 1\nmetric = \"connections\"\nper = \"second\""
            ),
            "rate_limit \"a\": per: applies to metric \"requests\" only; connections counts calls in flight"
        );
        assert_eq!(
            error("[[rate_limit]]\nid = \"a\"\nrate = 1\nmetric = \"tokens\"\nper = \"second\""),
            "rate_limit \"a\": metric: expected one of requests, connections, got \"tokens\""
        );
        assert_eq!(
            error("[[rate_limit]]\nid = \"a/b\"\nrate = 1\nper = \"second\""),
            "rate_limit #1: id: \"a/b\" must be 1 to 128 letters, digits, '-', '_' or '.' (it starts every limit key)"
        );
        assert_eq!(
            error(
                "[[rate_limit]]\nid = \"a\"\nrate = 1\nper = \"second\"\n[[rate_limit]]\nid = \"a\"\nrate = 2\nper = \"second\""
            ),
            "rate_limit \"a\": id: is used by an earlier limit; ids must be unique"
        );
    }

    #[test]
    fn refuses_a_key_only_the_caller_writes() {
        let message = error(
            "[[rate_limit]]\nid = \"a\"\nkey = [\"header.x-user\"]\nrate = 1\nper = \"second\"",
        );
        assert!(
            message.starts_with(
                "rate_limit \"a\": key: header and body parts are written by the caller"
            ),
            "{message}"
        );
        load("[[rate_limit]]\nid = \"a\"\nkey = [\"jwt.sub\", \"header.x-user\"]\nrate = 1\nper = \"second\"")
            .expect("combined with the identity");
    }

    #[test]
    fn accepts_a_zero_rate_and_an_empty_key() {
        let set = load("[[rate_limit]]\nid = \"off\"\nrate = 0\nper = \"second\"").expect("valid");
        assert_eq!(set.limits()[0].rate, 0);
        assert!(set.limits()[0].key.is_empty());
    }
}
