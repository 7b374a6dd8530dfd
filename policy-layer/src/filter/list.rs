//! PartiallyAuthorizeActions as a step of the reply: a tools/list answer keeps exactly the
//! tools some call could be allowed for (`docs/request-flow.md`); in LOG_ONLY the list stays
//! whole and the span and record say what would have been removed.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::Rewrite;
use crate::config::Mode;
use crate::record::ListRecord;
use crate::{reply, telemetry};

impl Rewrite {
    /// Filters the tools of one list answer; `id` answers the failure when no decision can be
    /// made (no policies, an engine error): fail closed.
    pub(super) fn filter_list(&self, id: &Value, message: &mut Value) -> String {
        let started = Instant::now();
        let exchange = &self.exchange;
        let settings = exchange.settings();
        let marking = exchange.marking();
        let span = telemetry::partially_authorize_actions(&exchange.span, settings);
        let _entered = span.enter();
        let Some(snapshot) = &exchange.snapshot else {
            span.record("policy.errors", "no usable policy set");
            return reply::list_failed(id, marking);
        };
        let principal = snapshot
            .model()
            .principal_uid(&exchange.identity)
            .to_string();
        span.record("enduser.id", principal.as_str());
        let Some(tools) = message
            .get_mut("result")
            .and_then(|r| r.get_mut("tools"))
            .and_then(Value::as_array_mut)
        else {
            // An error reply, or no tools: nothing to filter.
            return message.to_string();
        };
        let mut allowed = Vec::with_capacity(tools.len());
        let mut denied = Vec::new();
        let mut keep = Vec::with_capacity(tools.len());
        let mut lister = snapshot.lister_at(&exchange.identity, exchange.now());
        for tool in tools.iter() {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                keep.push(false);
                continue;
            };
            match lister.listing(name) {
                Ok(listing) if listing.listed() => {
                    allowed.push(name.to_owned());
                    keep.push(true);
                }
                Ok(_) => {
                    denied.push(name.to_owned());
                    keep.push(settings.mode == Mode::LogOnly);
                }
                Err(e) => {
                    let error = e.to_string();
                    span.record("policy.errors", error.as_str());
                    self.observe_list(principal, allowed, denied, Some(error), started.elapsed());
                    return reply::list_failed(id, marking);
                }
            }
        }
        let mut flags = keep.into_iter();
        tools.retain(|_| flags.next().unwrap_or(false));
        telemetry::record_listing(&span, &allowed, &denied);
        self.observe_list(principal, allowed, denied, None, started.elapsed());
        message.to_string()
    }

    /// Hands one list record to the observer.
    pub(super) fn observe_list(
        &self,
        principal: String,
        allowed: Vec<String>,
        denied: Vec<String>,
        error: Option<String>,
        latency: Duration,
    ) {
        let settings = self.exchange.settings();
        self.exchange.observer().on_list(&ListRecord {
            engine: &settings.engine_name,
            mode: settings.mode,
            principal,
            allowed,
            denied,
            error,
            latency,
        });
    }
}
