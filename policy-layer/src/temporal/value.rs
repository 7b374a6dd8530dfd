//! The values temporal conditions compare: event fields, request fields and literals.
//!
//! Equality is Dogwood's domain equality: same kind and same value (`decimal("1.50")` equals
//! `decimal("1.5")`, as in Cedar). Ordering comparisons and `sum` work on `Long` only.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value as Json;

use crate::model::tools::InputType;

/// Cedar `decimal` has four fraction digits.
const DECIMAL_SCALE: i64 = 10_000;

/// A value a temporal condition reads or binds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    /// `true` / `false`.
    Bool(bool),
    /// A 64-bit integer (`Long`).
    Long(i64),
    /// A decimal, in ten-thousandths.
    Decimal(i64),
    /// A string.
    Str(Arc<str>),
    /// An entity: type name and id.
    Entity(Arc<str>, Arc<str>),
    /// A JSON array, in its order: Dogwood's reference compares arrays element by element, in
    /// order (unlike a Cedar set), and AgentCore runs Dogwood.
    Set(Vec<Value>),
    /// A record.
    Record(BTreeMap<Arc<str>, Value>),
}

impl Value {
    /// A string value.
    #[must_use]
    pub fn str(s: &str) -> Self {
        Self::Str(Arc::from(s))
    }

    /// An entity value from its type name (`AgentCore::OAuthUser`) and id.
    #[must_use]
    pub fn entity(type_name: &str, id: &str) -> Self {
        Self::Entity(Arc::from(type_name), Arc::from(id))
    }

    /// An array value, in the order given.
    #[must_use]
    pub fn set(items: Vec<Value>) -> Self {
        Self::Set(items)
    }

    /// The integer, when this is a `Long`.
    #[must_use]
    pub fn as_long(&self) -> Option<i64> {
        match self {
            Self::Long(n) => Some(*n),
            _ => None,
        }
    }

    /// A decimal from its literal text (`"12.5"`), as Cedar's `decimal("...")` reads it.
    #[must_use]
    pub fn decimal_from_text(text: &str) -> Option<Self> {
        parse_decimal(text).map(Self::Decimal)
    }

    /// The value at a dotted path into records (`["a", "b"]` reads `.a.b`).
    #[must_use]
    pub fn at_path(&self, path: &[String]) -> Option<&Value> {
        let mut here = self;
        for key in path {
            match here {
                Self::Record(fields) => here = fields.get(key.as_str())?,
                _ => return None,
            }
        }
        Some(here)
    }

    /// The value of a JSON document typed by a tool's schema, as `context.input` types it: an
    /// `integer` field is a `Long`, a `number` field a `decimal` (also when written `500`), a
    /// value the type does not admit is absent (`None`). Untyped JSON maps directly: whole
    /// numbers are `Long`, fractions `decimal`. `null` is absent.
    #[must_use]
    pub fn from_json(json: &Json, ty: &InputType) -> Option<Self> {
        match (ty, json) {
            (_, Json::Null) => None,
            (InputType::String | InputType::Untyped, Json::String(s)) => Some(Self::str(s)),
            (InputType::Bool | InputType::Untyped, Json::Bool(b)) => Some(Self::Bool(*b)),
            (InputType::Long, Json::Number(n)) => long_of(n).map(Self::Long),
            (InputType::Decimal, Json::Number(n)) => {
                parse_decimal(&n.to_string()).map(Self::Decimal)
            }
            (InputType::Untyped, Json::Number(n)) => long_of(n)
                .map(Self::Long)
                .or_else(|| parse_decimal(&n.to_string()).map(Self::Decimal)),
            (InputType::Set(item), Json::Array(items)) => items
                .iter()
                .map(|v| Self::from_json(v, item))
                .collect::<Option<Vec<_>>>()
                .map(Self::set),
            (InputType::Untyped, Json::Array(items)) => items
                .iter()
                .map(|v| Self::from_json(v, &InputType::Untyped))
                .collect::<Option<Vec<_>>>()
                .map(Self::set),
            (InputType::Record(record), Json::Object(map)) => {
                let mut fields = BTreeMap::new();
                for (key, value) in map {
                    let ty = record.attribute(key).map_or(&InputType::Untyped, |a| &a.ty);
                    if let Some(v) = Self::from_json(value, ty) {
                        fields.insert(Arc::from(key.as_str()), v);
                    }
                }
                Some(Self::Record(fields))
            }
            (InputType::Untyped, Json::Object(map)) => Some(Self::Record(
                map.iter()
                    .filter_map(|(k, v)| {
                        Self::from_json(v, &InputType::Untyped).map(|v| (Arc::from(k.as_str()), v))
                    })
                    .collect(),
            )),
            _ => None,
        }
    }

    /// The value as JSON, for test vectors and logs.
    #[must_use]
    pub fn to_json(&self) -> Json {
        match self {
            Self::Bool(b) => Json::Bool(*b),
            Self::Long(n) => Json::from(*n),
            Self::Decimal(d) => Json::String(format_decimal(*d)),
            Self::Str(s) => Json::String(s.to_string()),
            Self::Entity(t, id) => Json::String(format!("{t}::\"{id}\"")),
            Self::Set(items) => Json::Array(items.iter().map(Self::to_json).collect()),
            Self::Record(fields) => Json::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(b) => write!(f, "{b}"),
            Self::Long(n) => write!(f, "{n}"),
            Self::Decimal(d) => write!(f, "decimal(\"{}\")", format_decimal(*d)),
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Entity(t, id) => write!(f, "{t}::{id:?}"),
            Self::Set(_) | Self::Record(_) => write!(f, "{}", self.to_json()),
        }
    }
}

fn long_of(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    // `5.0` for an integer field is accepted as 5, as `context.input` does.
    let f = n.as_f64()?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    let i = f as i64;
    #[allow(clippy::cast_precision_loss, clippy::float_cmp)]
    (i as f64 == f && f.abs() < 9.0e15).then_some(i)
}

/// Parses `-12.3456` into ten-thousandths; more than four fraction digits (other than
/// trailing zeros) or a value out of range is not a decimal.
fn parse_decimal(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > 4 {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let mut frac: i64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    for _ in fraction.len()..4 {
        frac *= 10;
    }
    let magnitude = whole.checked_mul(DECIMAL_SCALE)?.checked_add(frac)?;
    Some(if negative { -magnitude } else { magnitude })
}

fn format_decimal(d: i64) -> String {
    let sign = if d < 0 { "-" } else { "" };
    let abs = d.unsigned_abs();
    let scale = DECIMAL_SCALE.unsigned_abs();
    format!("{sign}{}.{:04}", abs / scale, abs % scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimals_equal_by_value_not_by_text() {
        assert_eq!(
            Value::decimal_from_text("1.50"),
            Value::decimal_from_text("1.5")
        );
        assert_eq!(Value::decimal_from_text("1.23456"), None);
        assert_eq!(
            Value::decimal_from_text("-0.5").map(|v| v.to_string()),
            Some("decimal(\"-0.5000\")".to_owned())
        );
    }

    #[test]
    fn json_types_map_as_the_tool_schema_says() {
        assert_eq!(
            Value::from_json(&json!(500), &InputType::Decimal),
            Value::decimal_from_text("500")
        );
        assert_eq!(
            Value::from_json(&json!(5.0), &InputType::Long),
            Some(Value::Long(5))
        );
        assert_eq!(
            Value::from_json(&json!(2.5), &InputType::Untyped),
            Value::decimal_from_text("2.5")
        );
        assert_eq!(Value::from_json(&json!("x"), &InputType::Long), None);
        assert_eq!(
            Value::from_json(&json!(["b", "a", "b"]), &InputType::Untyped),
            Some(Value::Set(vec![
                Value::str("b"),
                Value::str("a"),
                Value::str("b")
            ]))
        );
        assert_ne!(
            Value::from_json(&json!(["a", "b"]), &InputType::Untyped),
            Value::from_json(&json!(["b", "a"]), &InputType::Untyped),
            "arrays compare in order, as the reference compares them"
        );
    }

    #[test]
    fn paths_read_nested_records() {
        let v = Value::from_json(&json!({"a": {"b": 3}}), &InputType::Untyped).expect("value");
        assert_eq!(
            v.at_path(&["a".to_owned(), "b".to_owned()]),
            Some(&Value::Long(3))
        );
        assert_eq!(v.at_path(&["a".to_owned(), "c".to_owned()]), None);
    }
}
