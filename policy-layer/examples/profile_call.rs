//! Run with: cargo run --release -p policy-layer --example profile_call -- 20000
//!
//! Drives N allowed tools/call requests through `PolicyService` with one policy, for
//! instruction-level profiles (`valgrind --tool=callgrind`), where criterion's own machinery
//! would dominate the profile.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use policy_layer::model::{ModelConfig, ToolCatalog};
use policy_layer::{PolicyEngine, PolicyLayer, PolicySource};
use serde_json::json;
use tower::{Layer, Service, ServiceExt, service_fn};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let model = ModelConfig {
        target: "RefundTool".into(),
        ..ModelConfig::default()
    };
    let policy = r#"permit(principal, action == AgentCore::Action::"RefundTool___process_refund", resource)
        when { context.input.amount.lessThan(decimal("1000.0")) };"#;
    let engine = PolicyEngine::from_sources(model, &[PolicySource::new("p.cedar", policy)])
        .expect("policies");
    let _ = engine.set_catalog(ToolCatalog::from_list(&json!({"tools": [{"name": "process_refund",
        "inputSchema": {"type": "object", "properties": {"amount": {"type": "number"}, "customer_id": {"type": "string"}}}}]})));
    let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
        ))))
    });
    let service = PolicyLayer::new(engine).unauthenticated().layer(upstream);
    let body = Bytes::from(
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "process_refund", "arguments": {"amount": 500.0, "customer_id": "C001"}}})
        .to_string(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for _ in 0..n {
            let req = Request::post("/mcp")
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
                .expect("request");
            let mut svc = service.clone();
            let res = svc
                .ready()
                .await
                .expect("ready")
                .call(req)
                .await
                .expect("response");
            std::hint::black_box(res.into_body().collect().await.expect("body"));
        }
    });
}
