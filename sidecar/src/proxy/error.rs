//! The answers the proxy makes itself when it cannot pass a request on: a JSON-RPC error with
//! `id` null (it concerns the whole request), built here for every such case.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde_json::json;

/// The JSON-RPC code of a request to a path the sidecar does not serve.
pub const NOT_FOUND_CODE: i64 = -32601;
/// JSON-RPC internal error, used for an unreachable upstream.
pub const INTERNAL_ERROR: i64 = -32603;

/// A JSON-RPC error answer with HTTP status `status`.
#[must_use]
pub fn rpc_error<B: From<Bytes>>(status: StatusCode, code: i64, message: &str) -> Response<B> {
    let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
    let mut response = Response::new(B::from(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error with its sources, `outer: inner: innermost` (a source already in the text is not
/// repeated).
#[must_use]
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}
