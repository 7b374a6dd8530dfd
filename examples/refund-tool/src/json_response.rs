//! `--json-response` for servers that keep sessions.
//!
//! rmcp 3.11 honours `StreamableHttpServerConfig::json_response` only in stateless mode; with
//! sessions it always answers a POST with `text/event-stream`. This middleware closes that gap:
//! it reads the SSE answer to a POST up to the first JSON-RPC response and returns that message
//! as `application/json`, keeping every header (so `Mcp-Session-Id` survives). Messages the
//! server sends before its response (progress, logging) would be dropped; these tools send none.

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};
use serde_json::Value;
use sse_stream::SseStream;

/// Turns the SSE answer to a POST into a single `application/json` response.
pub async fn sse_to_json(request: Request, next: Next) -> Response {
    let is_post = request.method() == Method::POST;
    let response = next.run(request).await;
    let is_sse = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_post || !is_sse {
        return response;
    }

    let (mut parts, body) = response.into_parts();
    let mut events = SseStream::new(body);
    while let Some(event) = events.next().await {
        let data = match event {
            Ok(event) => event.data,
            Err(err) => return failure(&format!("reading the event stream: {err}")),
        };
        if let Some(data) = data.filter(|data| is_response(data)) {
            parts
                .headers
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            parts.headers.remove(CONTENT_LENGTH);
            return Response::from_parts(parts, Body::from(data));
        }
    }
    failure("the event stream ended without a response")
}

/// A JSON-RPC response or error (as opposed to a request or notification).
fn is_response(data: &str) -> bool {
    serde_json::from_str::<Value>(data).is_ok_and(|message| {
        message.get("id").is_some()
            && (message.get("result").is_some() || message.get("error").is_some())
    })
}

fn failure(message: &str) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, message.to_owned()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_results_and_errors_are_responses() {
        assert!(is_response(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#));
        assert!(is_response(
            r#"{"jsonrpc":"2.0","id":"a","error":{"code":1,"message":"x"}}"#
        ));
        assert!(!is_response(
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#
        ));
        assert!(!is_response(""));
    }
}
