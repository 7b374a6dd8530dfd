//! Run with: cargo run --release -p policy-layer --example analysis_reload -- 1000
//!
//! The semantic analysis of N policies on N tools (each permit conditioned on the caller's
//! team), then of the same set with one policy edited, as a reload after a one-policy change
//! does: the second analysis asks the solver again only about the edited policy's request
//! environments (`docs/performance.md`). Needs cvc5 (`CVC5`, else on the `PATH`).

use std::time::Instant;

use policy_layer::config::Validation;
use policy_layer::engine::{Budget, SchemaSource, Solver, load};
use policy_layer::model::{ModelConfig, ToolCatalog};
use policy_layer::{PolicyEngine, PolicySource};
use serde_json::json;

fn policies(n: usize, edited: bool) -> String {
    (0..n)
        .map(|i| {
            let team = if edited && i == 0 { "edited" } else { "refunds" };
            format!(
                "@id(\"p{i}\")\npermit(principal, action == AgentCore::Action::\"RefundTool___tool_{i}\", resource)\n  when {{ principal.hasTag(\"team\") && principal.getTag(\"team\") == \"{team}\" && context.input.amount.lessThan(decimal(\"{i}.5\")) }};\n"
            )
        })
        .collect()
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000);
    let tools: Vec<_> = (0..n)
        .map(|i| {
            json!({"name": format!("tool_{i}"), "inputSchema": {"type": "object",
            "properties": {"amount": {"type": "number"}}, "required": ["amount"]}})
        })
        .collect();
    let engine = PolicyEngine::new(ModelConfig {
        target: "RefundTool".into(),
        ..ModelConfig::default()
    });
    engine.configure_validation(SchemaSource::FromTools, Validation::FailOnAnyFindings);
    engine.configure_analysis(
        Solver::Auto,
        Budget {
            total: std::time::Duration::from_secs(3_600),
            ..Budget::default()
        },
    );
    let _ = engine.set_catalog(ToolCatalog::from_list(&json!({ "tools": tools })));
    for (what, edited) in [("first load", false), ("one policy edited", true)] {
        let set = load(&[PolicySource::new("p.cedar", policies(n, edited))]).expect("parses");
        let started = Instant::now();
        let report = engine.set_policies(set).expect("no findings");
        println!(
            "{what}: {} ms ({})",
            started.elapsed().as_millis(),
            report.analysis.unwrap_or_default()
        );
    }
}
