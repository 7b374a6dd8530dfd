//! A real MCP client (the official Rust SDK) against the example app on a local port.

use policy_layer::auth::Authenticator;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn lists_allowed_tools_allows_small_refunds_and_denies_large_ones() {
    let app =
        axum_refund::app(Authenticator::none(), CancellationToken::new()).expect("policies load");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("http://{addr}/mcp")),
    );
    let client = ClientConfig::default()
        .serve(transport)
        .await
        .expect("initialize");

    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["get_order", "process_refund"],
        "tools no policy permits are not listed"
    );

    let refund = |amount: f64| {
        let args = json!({"amount": amount, "customer_id": "C001"});
        CallToolRequestParams::new("process_refund")
            .with_arguments(args.as_object().cloned().unwrap_or_default())
    };
    let allowed = client.call_tool(refund(500.0)).await.expect("allowed");
    assert_ne!(allowed.is_error, Some(true), "{allowed:?}");

    let denied = client.call_tool(refund(2000.0)).await.expect_err("denied");
    let text = denied.to_string();
    assert!(
        text.contains("Tool Execution Denied: Tool call not allowed due to policy enforcement [Policy evaluation denied due to no determining policies]"),
        "{text}"
    );
    let _ = client.cancel().await;
}
