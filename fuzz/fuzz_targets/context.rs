//! `context.input` typing: a fuzzer-chosen tool inputSchema and tools/call arguments.
//!
//! The input is one JSON document, `[inputSchema, arguments]` (or `[inputSchema]` for a call
//! without arguments), read by the same strict parse as a request body; the arguments are
//! typed from their exact text, as the layer types a call. Invariants: no panic; when typing
//! succeeds, the Cedar context authorizes against a fixed policy set that reads
//! `context.input`, and each policy is satisfied exactly when the JSON arguments say it should
//! be (`amount` below 1000 as a decimal, `count` above 5 as a Long, `tags` holding "vip"): the
//! typed value is the number or set the client sent, never a rounded one; and a number with
//! more than four fraction digits as written never types as a decimal.

#![no_main]

use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityUid, Policy, PolicyId, PolicySet, Request,
};
use libfuzzer_sys::fuzz_target;
use policy_layer::jsonrpc;
use policy_layer::model::TypedInput;
use policy_layer::model::tools::{InputType, ToolCatalog};
use serde_json::{Value, json};

/// The fixed policies, by id.
const POLICIES: [(&str, &str); 3] = [
    (
        "amount_below_1000",
        r#"permit(principal, action, resource) when {
            context.input has amount && context.input.amount.lessThan(decimal("1000.0")) };"#,
    ),
    (
        "count_above_5",
        "permit(principal, action, resource) when {
            context.input has count && context.input.count > 5 };",
    ),
    (
        "tags_vip",
        r#"permit(principal, action, resource) when {
            context.input has tags && context.input.tags.contains("vip") };"#,
    ),
];

struct Fixture {
    policies: PolicySet,
    principal: EntityUid,
    action: EntityUid,
    resource: EntityUid,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| Fixture {
    policies: PolicySet::from_policies(POLICIES.map(|(id, text)| {
        Policy::parse(Some(PolicyId::new(id)), text).expect("the fixed policies parse")
    }))
    .expect("distinct ids"),
    principal: EntityUid::from_str(r#"AgentCore::OAuthUser::"alice""#).expect("uid"),
    action: EntityUid::from_str(r#"AgentCore::Action::"T___tool""#).expect("uid"),
    resource: EntityUid::from_str(r#"AgentCore::Gateway::"g""#).expect("uid"),
});

fuzz_target!(|data: &[u8]| {
    let Ok(Value::Array(parts)) = jsonrpc::parse_strict(data) else {
        return;
    };
    let Ok(raw) = serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(data) else {
        return;
    };
    let (schema, arguments) = match parts.as_slice() {
        [schema] => (schema, None),
        [schema, arguments] => (schema, Some(arguments)),
        _ => return,
    };
    let catalog =
        ToolCatalog::from_list(&json!({"tools": [{"name": "tool", "inputSchema": schema}]}));
    let ty = &catalog.get("tool").expect("the tool is listed").input;
    let text = raw.get(1).map(|a| a.get());
    let Ok(typed) = TypedInput::from_json(text, ty) else {
        return;
    };
    if let (Some(arguments), Some(InputType::Decimal)) = (text, declared_amount(ty))
        && let Some(amount) = amount_text(arguments)
    {
        assert!(
            fraction_digits(&amount) <= 4,
            "{amount} typed as a decimal with more than 4 fraction digits"
        );
    }
    let args = arguments.cloned().unwrap_or_else(|| json!({}));
    let fixture = &*FIXTURE;
    let context: Context = typed.into_context();
    let request = Request::new(
        fixture.principal.clone(),
        fixture.action.clone(),
        fixture.resource.clone(),
        context,
        None,
    )
    .expect("a request without a schema builds");
    let response = Authorizer::new().is_authorized(&request, &fixture.policies, &Entities::empty());
    let satisfied = |id: &str| response.diagnostics().reason().any(|p| p.to_string() == id);

    let declared = |name: &str| match ty {
        InputType::Record(record) => record.attribute(name).map(|a| &a.ty),
        _ => None,
    };
    let field = |name: &str| args.get(name).filter(|v| !v.is_null());

    if let Some(expected) = field("amount").and_then(|v| amount_below_1000(v, declared("amount"))) {
        assert_eq!(satisfied("amount_below_1000"), expected, "amount {args}");
    }
    if let Some(expected) = field("count").and_then(|v| count_above_5(v, declared("count"))) {
        assert_eq!(satisfied("count_above_5"), expected, "count {args}");
    }
    let vip = field("tags")
        .and_then(Value::as_array)
        .is_some_and(|tags| tags.iter().any(|t| t == "vip"));
    assert_eq!(satisfied("tags_vip"), vip, "tags {args}");
    if field("amount").is_none() && field("count").is_none() && !vip {
        assert_eq!(response.decision(), Decision::Deny);
    }
});

/// Whether `amount.lessThan(decimal("1000.0"))` holds, when the typing makes it a decimal
/// (`Some(false)` when it is a Long, for which `lessThan` is an error).
fn amount_below_1000(value: &Value, declared: Option<&InputType>) -> Option<bool> {
    let n = value.as_number()?;
    let decimal = match declared {
        Some(InputType::Decimal) => true,
        Some(InputType::Long) => false,
        None | Some(InputType::Untyped) => n.is_f64(),
        Some(_) => return None,
    };
    // A decimal that typed has at most four fraction digits, so near 1000 its f64 orders
    // exactly (999.9999 and 1000.0001 are far apart for an f64).
    Some(decimal && n.as_f64()? < 1000.0)
}

/// Whether `count > 5` holds, when the typing makes it a Long; `None` when it is a decimal
/// (whose comparison with a Long is not asserted here).
fn count_above_5(value: &Value, declared: Option<&InputType>) -> Option<bool> {
    let n = value.as_number()?;
    let long = match declared {
        Some(InputType::Long) => true,
        None | Some(InputType::Untyped) => !n.is_f64(),
        _ => return None,
    };
    if !long {
        return None;
    }
    match n.as_i64() {
        Some(i) => Some(i > 5),
        None => Some(n.as_f64()? > 5.0),
    }
}

fn declared_amount(ty: &InputType) -> Option<&InputType> {
    match ty {
        InputType::Record(record) => record.attribute("amount").map(|a| &a.ty),
        _ => None,
    }
}

/// The text of the `amount` number in the arguments' JSON text, when it is a number.
fn amount_text(arguments: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Amount<'a> {
        #[serde(borrow)]
        amount: Option<&'a serde_json::value::RawValue>,
    }
    let parsed: Amount<'_> = serde_json::from_str(arguments).ok()?;
    let text = parsed.amount?.get();
    text.starts_with(|c: char| c == '-' || c.is_ascii_digit())
        .then(|| text.to_owned())
}

/// Fraction digits of a number literal, trailing zeros aside and the exponent applied.
fn fraction_digits(text: &str) -> i64 {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i64>().unwrap_or(0)),
        None => (text, 0),
    };
    let fraction = mantissa.split_once('.').map_or("", |(_, f)| f).trim_end_matches('0');
    i64::try_from(fraction.len()).unwrap_or(i64::MAX).saturating_sub(exponent)
}
