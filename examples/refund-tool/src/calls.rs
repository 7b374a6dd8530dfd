//! The record of every `tools/call` the server executed, served at `GET /calls`.
//!
//! End-to-end tests read it to prove that a call denied by the policy sidecar never reached
//! the tool server.

use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::extract::State;
use rmcp::model::JsonObject;
use serde_json::{Value, json};

/// Calls received so far, shared by all sessions; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct CallLog(Arc<Mutex<Vec<Value>>>);

impl CallLog {
    /// Appends `{ "tool": .., "arguments": .. }`.
    pub fn record(&self, tool: &str, arguments: &JsonObject) {
        let entry = json!({ "tool": tool, "arguments": arguments });
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(entry);
    }

    /// A copy of every call recorded so far, oldest first.
    pub fn snapshot(&self) -> Vec<Value> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets every recorded call.
    pub fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// `GET /calls`: the JSON array of calls received so far.
pub async fn list(State(calls): State<CallLog>) -> Json<Vec<Value>> {
    Json(calls.snapshot())
}

/// `DELETE /calls`: starts the record afresh (lets several tests share one server).
pub async fn clear(State(calls): State<CallLog>) -> http::StatusCode {
    calls.clear();
    http::StatusCode::NO_CONTENT
}
