//! `context.input`: tools/call arguments typed by the tool's inputSchema, built directly as
//! Cedar values (no JSON printed for Cedar to parse again).
//!
//! A JSON `number` field accepts both `500` and `500.0` (AgentCore rejects `500`); a value
//! Cedar cannot hold exactly is an error, never silently rounded.

use std::fmt::Write as _;

use std::collections::BTreeMap;

use cedar_policy::Context;
use cedar_policy_core::ast::Value as CedarValue;
use serde_json::{Map, Number, Value};
use smol_str::SmolStr;

use super::tools::{InputType, RecordType};
use super::values;

/// Cedar `decimal` has four fraction digits over an `i64`.
const DECIMAL_FRACTION_DIGITS: usize = 4;
/// More significant digits than this cannot be told apart from a rounded `f64`.
const MAX_EXACT_DIGITS: usize = 15;

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
    /// Types `arguments` (the tools/call `arguments` object; `None` when absent) by `ty`.
    ///
    /// # Errors
    /// [`InputError`] naming the first value that does not fit.
    pub fn new(arguments: Option<&Value>, ty: &InputType) -> Result<Self, InputError> {
        let mut path = String::from("input");
        let empty = Value::Object(Map::new());
        let arguments = arguments.unwrap_or(&empty);
        if !arguments.is_object() {
            return Err(InputError {
                path,
                problem: format!("arguments must be an object, got {}", kind(arguments)),
            });
        }
        let ty = match ty {
            InputType::Untyped | InputType::Record(_) => ty,
            _ => &InputType::Untyped,
        };
        to_cedar(arguments, ty, &mut path).map(Self)
    }

    /// The Cedar context `{ input: ... }`.
    #[must_use]
    pub fn into_context(self) -> Context {
        values::context(self.0)
    }
}

fn to_cedar(value: &Value, ty: &InputType, path: &mut String) -> Result<CedarValue, InputError> {
    match (ty, value) {
        (InputType::String | InputType::Untyped, Value::String(s)) => Ok(values::string(s)),
        (InputType::Bool | InputType::Untyped, Value::Bool(b)) => Ok(values::boolean(*b)),
        (InputType::Long, Value::Number(n)) => long(n).map(values::long).map_err(|p| err(path, p)),
        (InputType::Decimal, Value::Number(n)) => decimal(n)
            .and_then(|t| values::decimal(&t))
            .map_err(|p| err(path, p)),
        (InputType::Untyped, Value::Number(n)) => if n.is_f64() {
            decimal(n).and_then(|t| values::decimal(&t))
        } else {
            long(n).map(values::long)
        }
        .map_err(|p| err(path, p)),
        (InputType::Set(item), Value::Array(items)) => set(items, item, path),
        (InputType::Untyped, Value::Array(items)) => set(items, &InputType::Untyped, path),
        (InputType::Record(record), Value::Object(map)) => self::record(map, Some(record), path),
        (InputType::Untyped, Value::Object(map)) => self::record(map, None, path),
        (ty, value) => Err(err(
            path,
            format!("expected {}, got {}", expected(ty), kind(value)),
        )),
    }
}

fn set(items: &[Value], item: &InputType, path: &mut String) -> Result<CedarValue, InputError> {
    let mut out = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let len = path.len();
        let _ = write!(path, "[{i}]");
        out.push(to_cedar(v, item, path)?);
        path.truncate(len);
    }
    Ok(values::set(out))
}

fn record(
    map: &Map<String, Value>,
    declared: Option<&RecordType>,
    path: &mut String,
) -> Result<CedarValue, InputError> {
    if let Some(missing) = declared.and_then(|d| {
        d.attributes
            .iter()
            .find(|a| a.required && map.get(&a.name).is_none_or(Value::is_null))
    }) {
        return Err(err(
            path,
            format!("missing required attribute `{}`", missing.name),
        ));
    }
    let mut fields = BTreeMap::new();
    for (name, v) in map {
        if v.is_null() {
            continue; // an absent optional attribute
        }
        let ty = declared
            .and_then(|d| d.attribute(name))
            .map_or(&InputType::Untyped, |a| &a.ty);
        let len = path.len();
        path.push('.');
        path.push_str(name);
        fields.insert(SmolStr::new(name), to_cedar(v, ty, path)?);
        path.truncate(len);
    }
    Ok(values::record(fields))
}

fn long(n: &Number) -> Result<i64, String> {
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    if n.is_u64() {
        return Err(format!("{n} is out of range for a Long"));
    }
    match n.as_f64() {
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        Some(f) if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => Ok(f as i64),
        Some(f) if f.fract() == 0.0 => Err(format!("{n} is out of range for an exact Long")),
        _ => Err(format!("expected an integer, got {n}")),
    }
}

/// The Cedar `decimal` literal for a JSON number: `500` -> `"500.0"`, `999.99` -> `"999.99"`.
fn decimal(n: &Number) -> Result<String, String> {
    let text = if let Some(i) = n.as_i64() {
        format!("{i}.0")
    } else if n.is_u64() {
        return Err(format!("{n} is out of range for a decimal"));
    } else {
        let f = n.as_f64().unwrap_or(f64::NAN);
        if !f.is_finite() {
            return Err(format!("{n} is not a finite number"));
        }
        // `Display` for f64 is the shortest text that reads back to the same f64, never
        // in exponent form, so it is the number the client wrote whenever that is exact.
        let mut s = f.to_string();
        if !s.contains('.') {
            s.push_str(".0");
        }
        s
    };
    let (int_part, frac_part) = text.split_once('.').unwrap_or((&text, "0"));
    if frac_part.len() > DECIMAL_FRACTION_DIGITS {
        return Err(format!(
            "{n} has more than {DECIMAL_FRACTION_DIGITS} fraction digits, which a decimal cannot hold"
        ));
    }
    let digits = int_part
        .trim_start_matches('-')
        .trim_start_matches('0')
        .len()
        + frac_part.trim_end_matches('0').len();
    if digits > MAX_EXACT_DIGITS {
        return Err(format!(
            "{n} has more significant digits than can be checked exactly"
        ));
    }
    // i64 / 10^4: |value| < 922337203685477.5807.
    let int_value: i128 = int_part
        .parse()
        .map_err(|_| format!("{n} is not a decimal"))?;
    if int_value.abs() > 922_337_203_685_476 {
        return Err(format!("{n} is out of range for a decimal"));
    }
    Ok(text)
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

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
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

    fn num(v: Value) -> Number {
        match v {
            Value::Number(n) => n,
            _ => panic!("not a number"),
        }
    }

    #[test]
    fn number_field_accepts_integer_and_fractional_json() {
        assert_eq!(decimal(&num(json!(500))).as_deref(), Ok("500.0"));
        assert_eq!(decimal(&num(json!(500.0))).as_deref(), Ok("500.0"));
        assert_eq!(decimal(&num(json!(999.99))).as_deref(), Ok("999.99"));
        assert_eq!(decimal(&num(json!(-100.0))).as_deref(), Ok("-100.0"));
        assert_eq!(decimal(&num(json!(0.01))).as_deref(), Ok("0.01"));
        assert_eq!(decimal(&num(json!(0.0001))).as_deref(), Ok("0.0001"));
    }

    #[test]
    fn decimal_never_rounds_silently() {
        assert!(decimal(&num(json!(0.00001))).is_err());
        assert!(decimal(&num(json!(1.23456))).is_err());
        assert!(decimal(&num(json!(1e300))).is_err());
        assert!(decimal(&num(json!(u64::MAX))).is_err());
        assert!(decimal(&num(json!(922_337_203_685_477_i64))).is_err());
        assert!(decimal(&num(json!(123_456_789_012.345_6))).is_err());
        assert_eq!(
            decimal(&num(json!(12_345_678_901.234_5))).as_deref(),
            Ok("12345678901.2345")
        );
    }

    #[test]
    fn integer_field_accepts_whole_floats_only() {
        assert_eq!(long(&num(json!(5.0))), Ok(5));
        assert_eq!(long(&num(json!(-7))), Ok(-7));
        assert!(long(&num(json!(5.5))).is_err());
        assert!(long(&num(json!(u64::MAX))).is_err());
        assert!(long(&num(json!(1e300))).is_err());
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
