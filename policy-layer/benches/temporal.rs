//! The cost of temporal policies (docs/temporal.md): the lookup a call pays when no temporal
//! policy can apply to its tool, and the evaluation of AgentCore's documented conditions over
//! sessions of 10, 100 and 1,000 events in the window.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use policy_layer::PolicySource;
use policy_layer::model::{ActionModel, ModelConfig};
use policy_layer::temporal::{self, Event, EventKind, RequestFacts, TemporalPolicies, Value};

const GATEWAY: &str = "gw";

fn model() -> ActionModel {
    ActionModel::new(ModelConfig {
        target: "FundsTarget".into(),
        gateway_id: GATEWAY.into(),
        ..ModelConfig::default()
    })
}

/// The documented rate limit and one-time approval on `transfer_funds`, and `n` more temporal
/// policies each on a tool of its own.
fn policies(n: usize) -> TemporalPolicies {
    let a = |tool: &str| format!("AgentCore::Action::\"FundsTarget___{tool}\"");
    let mut text = format!(
        "forbid (principal, action == {t}, resource) when temporal {{ exists (n: Long). (count for (t: Timepoint). where (formerly within 24h ({t}::request{{ eventResource: resource }} && tp(t)))) == n && n > 3000 }};\n\
         permit (principal, action == {t}, resource) when temporal {{ !{t}::response{{ eventResource: resource }} since within 24h {b}::response{{ eventResource: resource }} }};\n",
        t = a("transfer_funds"),
        b = a("get_account_balance"),
    );
    for i in 0..n {
        text.push_str(&format!(
            "permit (principal, action == {}, resource) when temporal {{ formerly within 1h {}::response{{ eventResource: resource }} }};\n",
            a(&format!("tool_{i}")),
            a("get_account_balance")
        ));
    }
    let loaded = temporal::load(&[PolicySource::new("bench.cedar", text)]).expect("loads");
    TemporalPolicies::new(&loaded, &model())
}

/// A session of `n` events in the window: one balance lookup, then transfers and responses.
fn history(n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    let gw = Value::entity("AgentCore::Gateway", GATEWAY);
    for i in 0..n {
        let (tool, kind) = match i {
            0 => ("get_account_balance", EventKind::Response),
            i if i % 2 == 1 => ("transfer_funds", EventKind::Request),
            _ => ("transfer_funds", EventKind::Error),
        };
        let mut e = Event::new(
            i64::try_from(i).unwrap_or(0) * 10,
            &format!("FundsTarget___{tool}"),
            kind,
        );
        e.resource = Some(gw.clone());
        e.input = Some(Value::Record(BTreeMap::from([(
            Arc::from("amount"),
            Value::Long(100),
        )])));
        out.push(e);
    }
    out
}

fn bench(c: &mut Criterion) {
    let set = policies(100);
    let mut g = c.benchmark_group("temporal");
    g.bench_function(
        "lookup, tool no temporal policy touches (102 temporal policies)",
        |b| {
            b.iter(|| black_box(set.for_tool(black_box("get_account_balance")).len()));
        },
    );
    let facts = RequestFacts {
        principal: Value::entity("AgentCore::OAuthUser", "alice"),
        principal_attrs: Value::Record(BTreeMap::new()),
        resource: Value::entity("AgentCore::Gateway", GATEWAY),
        input: Value::Record(BTreeMap::from([(Arc::from("amount"), Value::Long(100))])),
        session: Value::str("s"),
    };
    let ids = set.for_tool("transfer_funds").to_vec();
    for n in [10, 100, 1000] {
        let h = history(n);
        let mut current = Event::new(
            i64::try_from(n).unwrap_or(0) * 10,
            "FundsTarget___transfer_funds",
            EventKind::Request,
        );
        current.resource = Some(Value::entity("AgentCore::Gateway", GATEWAY));
        g.bench_with_input(
            BenchmarkId::new(
                "transfer_funds: count and since conditions, events in window",
                n,
            ),
            &n,
            |b, _| b.iter(|| black_box(set.evaluate(&ids, &h, &current, &facts))),
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
