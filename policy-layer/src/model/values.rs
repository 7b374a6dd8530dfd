//! Cedar values built directly, through `cedar-policy-core` (pinned with `cedar-policy`).
//!
//! The public `cedar-policy` constructors are correct but slow on the request path: each
//! `RestrictedExpression::new_decimal` parses the name `decimal` with the full Cedar parser
//! (about 8 us), `Context::from_pairs` re-evaluates every value, and `Entities::from_entities`
//! recomputes the transitive closure of the action hierarchy on every request. Here values are
//! made once, the decimal constructor is looked up once, and the action hierarchy's closure is
//! computed once per policy snapshot (measured in `benches/layer.rs`; see the README).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::thread::LocalKey;

use cedar_policy::{Context, Entities, Entity, EntityUid};
use cedar_policy_core::ast::{
    self, ExtensionFunction, Name, PartialValue, RestrictedExpr, Unknown, Value,
};
use cedar_policy_core::entities::{Entities as CoreEntities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;
use smol_str::SmolStr;

use crate::clock::Timestamp;

static DECIMAL: LazyLock<Option<&'static ExtensionFunction>> =
    LazyLock::new(|| function("decimal"));
static DURATION: LazyLock<Option<&'static ExtensionFunction>> =
    LazyLock::new(|| function("duration"));
static OFFSET: LazyLock<Option<&'static ExtensionFunction>> = LazyLock::new(|| function("offset"));
/// `datetime("1970-01-01")`: every `now` is this plus an offset in milliseconds.
static EPOCH: LazyLock<Option<Value>> =
    LazyLock::new(
        || match function("datetime")?.call(&[Value::from("1970-01-01")]) {
            Ok(PartialValue::Value(value)) => Some(value),
            _ => None,
        },
    );

fn function(name: &str) -> Option<&'static ExtensionFunction> {
    let name = Name::parse_unqualified_name(name).ok()?;
    Extensions::all_available().func(&name).ok()
}

fn call(function: Option<&'static ExtensionFunction>, args: &[Value]) -> Result<Value, String> {
    let function = function.ok_or_else(|| "a Cedar extension is not available".to_owned())?;
    match function.call(args) {
        Ok(PartialValue::Value(value)) => Ok(value),
        Ok(PartialValue::Residual(_)) => Err("a Cedar extension returned no value".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

static IP: LazyLock<Option<&'static ExtensionFunction>> = LazyLock::new(|| function("ip"));

/// A Cedar `ipaddr` value from an address (`"10.0.0.1"`, `"::1"`).
///
/// # Errors
/// The ipaddr extension's own message when the text is not an address it can hold.
pub fn ipaddr(address: std::net::IpAddr) -> Result<Value, String> {
    let function = (*IP).ok_or_else(|| "the ipaddr extension is not available".to_owned())?;
    let text = address.to_string();
    match function.call(&[Value::from(text.as_str())]) {
        Ok(PartialValue::Value(value)) => Ok(value),
        Ok(PartialValue::Residual(_)) => Err(format!("{text} is not an address")),
        Err(e) => Err(e.to_string()),
    }
}

/// A Cedar `decimal` value from its literal text (`"999.99"`).
///
/// # Errors
/// The decimal extension's own message when the text is not a decimal it can hold.
pub fn decimal(text: &str) -> Result<Value, String> {
    let function = (*DECIMAL).ok_or_else(|| "the decimal extension is not available".to_owned())?;
    match function.call(&[Value::from(text)]) {
        Ok(PartialValue::Value(value)) => Ok(value),
        Ok(PartialValue::Residual(_)) => Err(format!("{text} is not a decimal")),
        Err(e) => Err(e.to_string()),
    }
}

/// A Cedar `datetime` value: `datetime("1970-01-01").offset(duration("<ms>ms"))`, which is
/// how Cedar itself writes any instant.
///
/// Cedar parses a `duration` with a regular expression (about 2 us, a twentieth of the whole
/// proxy hop), so the request path parses one only once a minute per thread: the minute's
/// start is kept, and the milliseconds into it are added as at most five `offset`s by
/// durations made once (1 to 9 times 1, 10, 100, 1,000 and 10,000 ms).
///
/// # Errors
/// The datetime extension's own message (an instant Cedar cannot hold).
pub fn datetime(now: Timestamp) -> Result<Value, String> {
    const MINUTE_MS: i64 = 60_000;
    thread_local! {
        /// The start of the minute of the last `now` on this thread, in ms and as a datetime.
        static MINUTE: Last = const { RefCell::new(None) };
    }
    let ms = now.unix_millis();
    let minute = ms.div_euclid(MINUTE_MS) * MINUTE_MS;
    let Some(steps) = STEPS.as_ref() else {
        return parsed_datetime(ms);
    };
    let mut value = last_or(&MINUTE, minute, || parsed_datetime(minute))?;
    let mut rest = ms - minute;
    for powers in steps {
        let digit = usize::try_from(rest % 10).unwrap_or_default();
        rest /= 10;
        if digit > 0 {
            value = call(*OFFSET, &[value, powers[digit - 1].clone()])?;
        }
    }
    Ok(value)
}

/// `datetime("1970-01-01").offset(duration("<ms>ms"))`, the duration parsed.
fn parsed_datetime(ms: i64) -> Result<Value, String> {
    let epoch = (*EPOCH)
        .clone()
        .ok_or_else(|| "the datetime extension is not available".to_owned())?;
    call(*OFFSET, &[epoch, duration(ms)?])
}

/// `duration("<ms>ms")`, parsed by Cedar.
fn duration(ms: i64) -> Result<Value, String> {
    call(*DURATION, &[Value::from(format!("{ms}ms").as_str())])
}

/// `duration`s of `d * 10^k` ms for `d` in 1..=9 and `k` in 0..=4: every remainder of a minute
/// (under 60,000 ms) is a sum of at most one of each row.
static STEPS: LazyLock<Option<Vec<Vec<Value>>>> = LazyLock::new(|| {
    (0..5u32)
        .map(|k| {
            (1..=9i64)
                .map(|d| duration(d * 10i64.pow(k)).ok())
                .collect()
        })
        .collect()
});

/// The `context.system` record of a request decided at `now`: `{ now: datetime }`.
///
/// # Errors
/// As [`datetime`].
pub fn system(now: Timestamp) -> Result<Value, String> {
    thread_local! {
        /// The last record made on this thread and its millisecond: the requests of one
        /// millisecond share it (a record is immutable and shared by reference count).
        static SYSTEM: Last = const { RefCell::new(None) };
    }
    last_or(&SYSTEM, now.unix_millis(), || {
        let mut fields = BTreeMap::new();
        fields.insert(SmolStr::new_static("now"), datetime(now)?);
        Ok(record(fields))
    })
}

/// A thread's last value made for a millisecond count, and that count.
type Last = RefCell<Option<(i64, Value)>>;

/// The value `kept` holds for `at`, else `make`'s, then kept for `at` (values are immutable and
/// shared by reference count, so a kept one is the same value made again).
fn last_or(
    kept: &'static LocalKey<Last>,
    at: i64,
    make: impl FnOnce() -> Result<Value, String>,
) -> Result<Value, String> {
    let hit = kept.with_borrow(|last| {
        last.as_ref()
            .filter(|(kept_at, _)| *kept_at == at)
            .map(|(_, value)| value.clone())
    });
    if let Some(value) = hit {
        return Ok(value);
    }
    let value = make()?;
    kept.set(Some((at, value.clone())));
    Ok(value)
}

/// A Cedar string value.
#[must_use]
pub fn string(s: &str) -> Value {
    Value::from(s)
}

/// A Cedar `Long` value.
#[must_use]
pub fn long(i: i64) -> Value {
    Value::from(i)
}

/// A Cedar `Bool` value.
#[must_use]
pub fn boolean(b: bool) -> Value {
    Value::from(b)
}

/// A Cedar set.
#[must_use]
pub fn set(values: Vec<Value>) -> Value {
    Value::set(values, None)
}

/// A Cedar record.
#[must_use]
pub fn record(fields: BTreeMap<SmolStr, Value>) -> Value {
    Value::record_arc(Arc::new(fields), None)
}

/// The request context `{ input: <input> }`.
#[must_use]
pub fn context(input: Value) -> Context {
    let mut fields = BTreeMap::new();
    fields.insert(SmolStr::new_static("input"), input);
    Context::from(ast::Context::Value(Arc::new(fields)))
}

/// The request context `{ input: <input>, system: <system> }` (`system` from [`system`]).
#[must_use]
pub fn context_with_system(input: Value, system: Value) -> Context {
    let mut fields = BTreeMap::new();
    fields.insert(SmolStr::new_static("input"), input);
    fields.insert(SmolStr::new_static("system"), system);
    Context::from(ast::Context::Value(Arc::new(fields)))
}

/// The request context `{ input, system, temporal }` of a call with temporal conditions
/// (`temporal` from `TemporalValues::to_cedar`).
#[must_use]
pub fn context_with_temporal(input: Value, system: Value, temporal: Value) -> Context {
    let mut fields = BTreeMap::new();
    fields.insert(SmolStr::new_static("input"), input);
    fields.insert(SmolStr::new_static("system"), system);
    fields.insert(SmolStr::new_static("temporal"), temporal);
    Context::from(ast::Context::Value(Arc::new(fields)))
}

/// The name of the unknown that stands for `context.system.now` while a list is partially
/// evaluated.
pub const NOW_UNKNOWN: &str = "now";

/// `{ now: unknown("now") }`: the `system` record of a list's first evaluation.
#[must_use]
pub fn unknown_system() -> RestrictedExpr {
    RestrictedExpr::record([(
        SmolStr::new_static("now"),
        RestrictedExpr::unknown(Unknown::new_untyped(NOW_UNKNOWN)),
    )])
    .unwrap_or_else(|_| RestrictedExpr::unknown(Unknown::new_untyped("system")))
}

/// The context of a list: `input` an unknown and `system` as given, so that Cedar's partial
/// evaluation decides what does not depend on the input and leaves the rest as a residual.
///
/// # Errors
/// Cedar's message when the record cannot be built.
pub fn partial_context(system: RestrictedExpr) -> Result<Context, String> {
    let pairs = [
        (
            SmolStr::new_static("input"),
            RestrictedExpr::unknown(Unknown::new_untyped("input")),
        ),
        (SmolStr::new_static("system"), system),
        // A temporal condition's value depends on the session: unknown to a list, so a
        // tool that a temporal permit may allow is listed (`docs/temporal.md`).
        (
            SmolStr::new_static("temporal"),
            RestrictedExpr::unknown(Unknown::new_untyped("temporal")),
        ),
    ];
    ast::Context::from_pairs(pairs, Extensions::all_available())
        .map(Context::from)
        .map_err(|e| e.to_string())
}

/// A request context whose attributes are the fields of `record` (a Cedar record value);
/// `None` when it is not a record.
#[must_use]
pub fn record_context(record: Value) -> Option<Context> {
    match record.value {
        ast::ValueKind::Record(fields) => Some(Context::from(ast::Context::Value(fields))),
        _ => None,
    }
}

/// An entity with string attributes and string tags, and no parents.
#[must_use]
pub fn leaf_entity(
    uid: EntityUid,
    attrs: &[(&str, &str)],
    tags: &[(String, String)],
) -> Arc<ast::Entity> {
    let attr = |(k, v): &(&str, &str)| (SmolStr::new(k), PartialValue::Value(Value::from(*v)));
    let tag = |(k, v): &(String, String)| {
        (
            SmolStr::new(k),
            PartialValue::Value(Value::from(v.as_str())),
        )
    };
    Arc::new(ast::Entity::new_with_attr_partial_value(
        uid.into(),
        attrs.iter().map(attr),
        HashSet::new(),
        HashSet::new(),
        tags.iter().map(tag),
    ))
}

/// Entities whose transitive closure is already computed, to be shared by many requests.
#[derive(Debug, Clone, Default)]
pub struct Closed(Option<CoreEntities>);

impl Closed {
    /// Computes the transitive closure of `entities` once.
    ///
    /// # Errors
    /// Cedar's message when the entities do not form a hierarchy (duplicates, cycles).
    pub fn new(entities: Vec<Entity>) -> Result<Self, String> {
        let entities = Entities::from_entities(entities, None).map_err(|e| e.to_string())?;
        let core: &CoreEntities = entities.as_ref();
        Ok(Self(Some(core.clone())))
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// These entities plus `leaf`, an entity with no parents (the principal): one insertion,
    /// nothing to recompute.
    ///
    /// # Errors
    /// Cedar's message when `leaf` duplicates one of the entities.
    pub fn with_leaf(&self, leaf: Arc<ast::Entity>) -> Result<Entities, String> {
        self.0
            .clone()
            .unwrap_or_default()
            .add_entities(
                std::iter::once(leaf),
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::all_available(),
            )
            .map(Entities::from)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_is_the_same_value_however_it_is_made() {
        // Minute boundaries, every digit position, before 1970, and the same minute twice
        // (the kept start) then another one.
        for ms in [
            0,
            1,
            59_999,
            60_000,
            60_001,
            1_764_500_000_000,
            1_764_500_012_345,
            1_764_500_059_999,
            1_764_500_060_000,
            1_764_500_019_876,
            -1,
            -60_001,
            -86_400_000 * 365,
        ] {
            assert_eq!(
                datetime(Timestamp::from_unix_millis(ms)),
                parsed_datetime(ms),
                "{ms} ms"
            );
        }
    }

    #[test]
    fn decimal_values_compare_like_cedar_literals() {
        let a = decimal("999.99").expect("decimal");
        let b = decimal("999.99").expect("decimal");
        assert_eq!(a, b);
        assert_ne!(a, decimal("1000.0").expect("decimal"));
        assert!(decimal("1.23456").is_err());
        assert!(decimal("abc").is_err());
    }

    #[test]
    fn addresses_are_ipaddr_values_and_records_become_contexts() {
        let ip = ipaddr("10.1.2.3".parse().expect("ip")).expect("ipaddr");
        assert!(matches!(ip.value, ast::ValueKind::ExtensionValue(_)));
        let mut fields = BTreeMap::new();
        fields.insert(SmolStr::new("sourceIp"), ip);
        assert!(record_context(record(fields)).is_some());
        assert!(record_context(string("x")).is_none());
    }
}
