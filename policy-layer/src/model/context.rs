//! `context.input`: tools/call arguments typed by the tool's inputSchema, built directly as
//! Cedar values (no JSON printed for Cedar to parse again).
//!
//! Typing reads the arguments' JSON *text*, so a number is the number the client wrote: a
//! `number` field accepts both `500` and `500.0` (AgentCore rejects `500`), and a value Cedar
//! cannot hold exactly (`1000.00000000000000001` has more than four fraction digits) is an
//! error, never a silently rounded float (`docs/cedar-model.md`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use cedar_policy::Context;
use cedar_policy_core::ast::Value as CedarValue;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use smol_str::SmolStr;

use super::tools::{InputType, RecordType};
use super::values;

/// Cedar `decimal` has four fraction digits over an `i64`.
const DECIMAL_FRACTION_DIGITS: u32 = 4;
/// The largest `|value| * 10^4` a Cedar decimal holds.
const DECIMAL_MAX_UNITS: i128 = i64::MAX as i128;

/// Arguments that do not fit the tool's input schema, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct InputError {
    /// Where, as a path from `input` (for example `input.amount`).
    pub path: String,
    /// What is wrong, in lower case.
    pub problem: String,
}

/// A typed `context.input`, ready to be put into a Cedar request.
#[derive(Debug, Clone)]
pub struct TypedInput(CedarValue);

impl TypedInput {
    /// Types `arguments`, the tools/call `arguments` as the client wrote them (`None` when
    /// absent), by `ty`.
    ///
    /// # Errors
    /// [`InputError`] naming the first value that does not fit.
    pub fn from_json(arguments: Option<&str>, ty: &InputType) -> Result<Self, InputError> {
        let mut path = String::from("input");
        let text = arguments.unwrap_or("{}");
        let raw: &RawValue = serde_json::from_str(text).map_err(|e| err(&path, e.to_string()))?;
        if !raw.get().starts_with('{') {
            return Err(InputError {
                path,
                problem: format!("arguments must be an object, got {}", kind(raw.get())),
            });
        }
        let ty = match ty {
            InputType::Untyped | InputType::Record(_) => ty,
            _ => &InputType::Untyped,
        };
        to_cedar(raw.get(), ty, &mut path).map(Self)
    }

    /// Types `arguments` given as a parsed value (policy test cases, tools): the same as
    /// [`from_json`](Self::from_json) of its JSON text.
    ///
    /// # Errors
    /// [`InputError`] naming the first value that does not fit.
    pub fn new(arguments: Option<&Value>, ty: &InputType) -> Result<Self, InputError> {
        let text = arguments.map(Value::to_string);
        Self::from_json(text.as_deref(), ty)
    }

    /// The Cedar context `{ input: ... }`.
    #[must_use]
    pub fn into_context(self) -> Context {
        values::context(self.0)
    }

    /// The Cedar context `{ input: ..., system: ... }`, `system` made by
    /// [`values::system`] (`{ now: datetime }`).
    #[must_use]
    pub fn into_context_with_system(self, system: CedarValue) -> Context {
        values::context_with_system(self.0, system)
    }

    /// The typed value itself (the contexts of the actions beyond tool calls are built from
    /// it, `model/params.rs`).
    #[must_use]
    pub fn into_value(self) -> CedarValue {
        self.0
    }
}

/// Types one JSON value, given as its text.
fn to_cedar(text: &str, ty: &InputType, path: &mut String) -> Result<CedarValue, InputError> {
    let fail = |path: &str, e: serde_json::Error| err(path, e.to_string());
    match (ty, text.as_bytes().first()) {
        (InputType::String | InputType::Untyped, Some(b'"')) => {
            let s: Cow<'_, str> = serde_json::from_str(text).map_err(|e| fail(path, e))?;
            Ok(values::string(&s))
        }
        (InputType::Bool | InputType::Untyped, Some(b't')) => Ok(values::boolean(true)),
        (InputType::Bool | InputType::Untyped, Some(b'f')) => Ok(values::boolean(false)),
        (InputType::Long, Some(b'-' | b'0'..=b'9')) => {
            long(text).map(values::long).map_err(|p| err(path, p))
        }
        (InputType::Decimal, Some(b'-' | b'0'..=b'9')) => decimal(text)
            .and_then(|t| values::decimal(&t))
            .map_err(|p| err(path, p)),
        (InputType::Untyped, Some(b'-' | b'0'..=b'9')) => if text.contains(['.', 'e', 'E']) {
            decimal(text).and_then(|t| values::decimal(&t))
        } else {
            long(text).map(values::long)
        }
        .map_err(|p| err(path, p)),
        (InputType::Set(item), Some(b'[')) => set(text, item, path),
        (InputType::Untyped, Some(b'[')) => set(text, &InputType::Untyped, path),
        (InputType::Record(record), Some(b'{')) => self::record(text, Some(record), path),
        (InputType::Untyped, Some(b'{')) => self::record(text, None, path),
        (ty, _) => Err(err(
            path,
            format!("expected {}, got {}", expected(ty), kind(text)),
        )),
    }
}

fn set(text: &str, item: &InputType, path: &mut String) -> Result<CedarValue, InputError> {
    let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| err(path, e.to_string()))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let len = path.len();
        let _ = write!(path, "[{i}]");
        out.push(to_cedar(v.get(), item, path)?);
        path.truncate(len);
    }
    Ok(values::set(out))
}

fn record(
    text: &str,
    declared: Option<&RecordType>,
    path: &mut String,
) -> Result<CedarValue, InputError> {
    let entries = Entries::parse(text).map_err(|e| err(path, e.to_string()))?;
    let present = |name: &str| {
        entries
            .0
            .iter()
            .any(|(key, value)| key == name && value.get() != "null")
    };
    if let Some(missing) = declared.and_then(|d| {
        d.attributes
            .iter()
            .find(|a| a.required && !present(&a.name))
    }) {
        return Err(err(
            path,
            format!("missing required attribute `{}`", missing.name),
        ));
    }
    let mut fields = BTreeMap::new();
    for (name, v) in &entries.0 {
        if v.get() == "null" {
            continue; // an absent optional attribute
        }
        let ty = declared
            .and_then(|d| d.attribute(name))
            .map_or(&InputType::Untyped, |a| &a.ty);
        let len = path.len();
        path.push('.');
        path.push_str(name);
        fields.insert(SmolStr::new(name), to_cedar(v.get(), ty, path)?);
        path.truncate(len);
    }
    Ok(values::record(fields))
}

/// An object's entries in document order, each value as its raw text. (Keys were already
/// checked for repeats by the strict parse of the request.)
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Entries<'a> {
    fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        (&mut de).deserialize_map(EntriesVisitor)
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = access.next_key::<Cow<'de, str>>()? {
            entries.push((key, access.next_value::<&'de RawValue>()?));
        }
        Ok(Entries(entries))
    }
}

/// A JSON number literal, exactly: its significant digits times `10^exponent`, read without
/// allocating. The digits are the integer part's then the fraction's, with the leading zeros of
/// the one and the trailing zeros of both taken off (moved into the exponent).
#[derive(Debug, PartialEq, Eq)]
struct Exact<'a> {
    negative: bool,
    /// The significant digits, in two pieces: empty for zero.
    digits: (&'a str, &'a str),
    exponent: i64,
}

impl<'a> Exact<'a> {
    /// Reads a JSON number literal (the grammar was checked by the JSON parse).
    fn parse(text: &'a str) -> Result<Self, String> {
        let out_of_range = || format!("{text} is out of range");
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, "0"),
        };
        let exponent: i64 = exponent
            .trim_start_matches('+')
            .parse()
            .map_err(|_| out_of_range())?;
        let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int_part.is_empty()
            || !int_part
                .bytes()
                .chain(frac_part.bytes())
                .all(|b| b.is_ascii_digit())
        {
            return Err(format!("{text} is not a number"));
        }
        let frac = frac_part.trim_end_matches('0');
        let frac_len = i64::try_from(frac.len()).map_err(|_| out_of_range())?;
        let mut int = int_part.trim_start_matches('0');
        let mut exponent = exponent.checked_sub(frac_len).ok_or_else(out_of_range)?;
        if frac.is_empty() {
            let trimmed = int.trim_end_matches('0');
            let zeros = i64::try_from(int.len() - trimmed.len()).map_err(|_| out_of_range())?;
            exponent = exponent.saturating_add(zeros);
            int = trimmed;
        }
        let frac = if int.is_empty() {
            frac.trim_start_matches('0')
        } else {
            frac
        };
        if int.is_empty() && frac.is_empty() {
            exponent = 0;
        }
        Ok(Self {
            negative,
            digits: (int, frac),
            exponent,
        })
    }

    fn is_zero(&self) -> bool {
        self.digits.0.is_empty() && self.digits.1.is_empty()
    }

    /// The value times `10^scale`, when that is a whole number within `limit`.
    fn scaled(&self, scale: u32, limit: i128) -> Option<i128> {
        let shift = self.exponent.checked_add(i64::from(scale))?;
        if shift < 0 {
            return None;
        }
        let mut value: i128 = 0;
        for d in self.digits.0.bytes().chain(self.digits.1.bytes()) {
            value = value.checked_mul(10)?.checked_add(i128::from(d - b'0'))?;
            if value > limit {
                return None;
            }
        }
        for _ in 0..shift {
            value = value.checked_mul(10)?;
            if value > limit {
                return None;
            }
        }
        Some(if self.negative { -value } else { value })
    }
}

/// A Long from a JSON number literal: a whole number within `i64` (`5.0` and `5e0` are 5).
fn long(text: &str) -> Result<i64, String> {
    let exact = Exact::parse(text)?;
    if !exact.is_zero() && exact.exponent < 0 {
        return Err(format!("expected an integer, got {text}"));
    }
    // `i64::MIN` is one beyond `i64::MAX` in magnitude.
    let limit = if exact.negative {
        i128::from(i64::MAX) + 1
    } else {
        i128::from(i64::MAX)
    };
    exact
        .scaled(0, limit)
        .and_then(|v| i64::try_from(v).ok())
        .ok_or_else(|| format!("{text} is out of range for a Long"))
}

/// The Cedar `decimal` literal for a JSON number literal: `500` -> `"500.0"`, `999.990` ->
/// `"999.99"`; at most four fraction digits as written (trailing zeros aside).
fn decimal(text: &str) -> Result<String, String> {
    let exact = Exact::parse(text)?;
    if exact.exponent < -i64::from(DECIMAL_FRACTION_DIGITS) {
        return Err(format!(
            "{text} has more than {DECIMAL_FRACTION_DIGITS} fraction digits, which a decimal cannot hold"
        ));
    }
    let limit = DECIMAL_MAX_UNITS + i128::from(exact.negative);
    let units = exact
        .scaled(DECIMAL_FRACTION_DIGITS, limit)
        .ok_or_else(|| format!("{text} is out of range for a decimal"))?;
    let scale = 10_i128.pow(DECIMAL_FRACTION_DIGITS);
    let sign = if units < 0 { "-" } else { "" };
    let (int_part, frac_part) = (units.abs() / scale, units.abs() % scale);
    let frac = format!("{frac_part:04}");
    let frac = frac.trim_end_matches('0');
    Ok(format!(
        "{sign}{int_part}.{}",
        if frac.is_empty() { "0" } else { frac }
    ))
}

fn err(path: &str, problem: impl Into<String>) -> InputError {
    InputError {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

fn expected(ty: &InputType) -> &'static str {
    match ty {
        InputType::String => "a string",
        InputType::Long => "an integer",
        InputType::Decimal => "a number",
        InputType::Bool => "a boolean",
        InputType::Record(_) => "an object",
        InputType::Set(_) => "an array",
        InputType::Untyped => "a value Cedar can hold",
    }
}

/// What a JSON value's text is, for messages.
fn kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tools::input_type;
    use serde_json::json;

    fn refund_type() -> InputType {
        input_type(&json!({"type": "object", "properties": {
            "amount": {"type": "number"}, "count": {"type": "integer"},
            "customer_id": {"type": "string"}}, "required": ["amount"]}))
    }

    #[test]
    fn number_field_accepts_integer_and_fractional_json() {
        assert_eq!(decimal("500").as_deref(), Ok("500.0"));
        assert_eq!(decimal("500.0").as_deref(), Ok("500.0"));
        assert_eq!(decimal("999.99").as_deref(), Ok("999.99"));
        assert_eq!(decimal("-100.0").as_deref(), Ok("-100.0"));
        assert_eq!(decimal("0.01").as_deref(), Ok("0.01"));
        assert_eq!(decimal("0.0001").as_deref(), Ok("0.0001"));
        assert_eq!(decimal("1.5e2").as_deref(), Ok("150.0"));
        assert_eq!(
            decimal("1000.00000").as_deref(),
            Ok("1000.0"),
            "trailing zeros aside"
        );
        assert_eq!(decimal("-0.0").as_deref(), Ok("0.0"));
    }

    #[test]
    fn decimal_never_rounds_silently() {
        assert!(decimal("0.00001").is_err());
        assert!(decimal("1.23456").is_err());
        assert!(decimal("1e300").is_err());
        assert!(decimal("18446744073709551615").is_err());
        assert!(
            decimal("1000.00000000000000001").is_err(),
            "as written, not as a float"
        );
        assert!(decimal("999.99999999999999999").is_err());
        assert!(decimal("1e-99999999999999999999").is_err());
        assert_eq!(
            decimal("12345678901.2345").as_deref(),
            Ok("12345678901.2345")
        );
        // Exact text needs no float: every digit of the largest decimal is kept.
        assert_eq!(
            decimal("922337203685477.5807").as_deref(),
            Ok("922337203685477.5807")
        );
        assert!(decimal("922337203685477.5808").is_err());
        assert_eq!(
            decimal("-922337203685477.5808").as_deref(),
            Ok("-922337203685477.5808")
        );
    }

    #[test]
    fn integer_field_accepts_whole_numbers_only() {
        assert_eq!(long("5.0"), Ok(5));
        assert_eq!(long("5e2"), Ok(500));
        assert_eq!(long("-7"), Ok(-7));
        assert_eq!(long("9223372036854775807"), Ok(i64::MAX));
        assert_eq!(long("-9223372036854775808"), Ok(i64::MIN));
        assert!(long("9223372036854775808").is_err());
        assert!(long("5.5").is_err());
        assert!(
            long("5.000000000000000001").is_err(),
            "as written, not as a float"
        );
        assert!(long("18446744073709551615").is_err());
        assert!(long("1e300").is_err());
    }

    #[test]
    fn decimal_input_is_typed_from_the_text_sent() {
        let e = TypedInput::from_json(
            Some(r#"{"amount": 1000.00000000000000001}"#),
            &refund_type(),
        )
        .expect_err("too many fraction digits");
        assert_eq!(e.path, "input.amount");
        assert!(e.problem.contains("more than 4 fraction digits"), "{e}");
        assert!(TypedInput::from_json(Some(r#"{"amount": 1000.0000}"#), &refund_type()).is_ok());
    }

    #[test]
    fn types_arguments_by_schema() {
        let typed = TypedInput::new(
            Some(&json!({"amount": 500, "count": 2.0, "customer_id": "C1"})),
            &refund_type(),
        );
        assert!(typed.is_ok(), "{typed:?}");
    }

    #[test]
    fn wrong_type_names_the_path() {
        let e = TypedInput::new(Some(&json!({"amount": "500"})), &refund_type())
            .expect_err("string for number");
        assert_eq!(
            e.to_string(),
            "input.amount: expected a number, got a string"
        );
        let e = TypedInput::new(Some(&json!({"count": 1})), &refund_type()).expect_err("missing");
        assert_eq!(e.to_string(), "input: missing required attribute `amount`");
        let e = TypedInput::new(Some(&json!([1])), &refund_type()).expect_err("not an object");
        assert_eq!(
            e.to_string(),
            "input: arguments must be an object, got an array"
        );
    }

    #[test]
    fn nested_paths_are_reported() {
        let ty = input_type(&json!({"type": "object", "properties": {
            "items": {"type": "array", "items": {"type": "object", "properties": {"qty": {"type": "integer"}}}}}}));
        let e = TypedInput::new(Some(&json!({"items": [{"qty": 1}, {"qty": 1.5}]})), &ty)
            .expect_err("fraction");
        assert_eq!(e.path, "input.items[1].qty");
    }

    #[test]
    fn untyped_arguments_map_json_types_directly() {
        let typed = TypedInput::new(
            Some(&json!({"a": 1, "b": 1.5, "c": "x", "d": [true], "e": {"f": null}})),
            &InputType::Untyped,
        )
        .expect("typed");
        let _context = typed.into_context();
    }
}
