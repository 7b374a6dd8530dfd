//! PartiallyAuthorizeActions as a step of the reply: a list answer keeps exactly the items
//! some request could be allowed for (`docs/request-flow.md`); in LOG_ONLY the list stays
//! whole and the span and record say what would have been removed.
//!
//! Tools are always filtered; resources, resource templates ([`super::resources`]) and
//! prompts ([`super::prompts`]) when their capability is governed.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::Rewrite;
use crate::config::Mode;
use crate::engine::{EngineError, Lister, Listing};
use crate::model::Capability;
use crate::record::ListRecord;
use crate::{reply, telemetry};

/// The kinds of list answers the filter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `tools/list`: `result.tools`, by `name`.
    Tools,
    /// `resources/list`: `result.resources`, by `uri`.
    Resources,
    /// `resources/templates/list`: `result.resourceTemplates`, by `uriTemplate`.
    ResourceTemplates,
    /// `prompts/list`: `result.prompts`, by `name`.
    Prompts,
}

impl ListKind {
    /// Every kind, in the order a result is filtered.
    pub const ALL: [Self; 4] = [
        Self::Tools,
        Self::Resources,
        Self::ResourceTemplates,
        Self::Prompts,
    ];

    /// The kind of list a request of `method` asks for.
    #[must_use]
    pub fn of_method(method: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.method() == method)
    }

    /// The request method.
    #[must_use]
    pub fn method(self) -> &'static str {
        match self {
            Self::Tools => "tools/list",
            Self::Resources => "resources/list",
            Self::ResourceTemplates => "resources/templates/list",
            Self::Prompts => "prompts/list",
        }
    }

    /// The key of the result's array.
    #[must_use]
    pub fn key(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Resources => "resources",
            Self::ResourceTemplates => "resourceTemplates",
            Self::Prompts => "prompts",
        }
    }

    /// The key naming one item.
    fn item_key(self) -> &'static str {
        match self {
            Self::Tools | Self::Prompts => "name",
            Self::Resources => "uri",
            Self::ResourceTemplates => "uriTemplate",
        }
    }

    /// The capability that must be governed for this list to be filtered.
    #[must_use]
    pub fn capability(self) -> Capability {
        match self {
            Self::Tools => Capability::Tools,
            Self::Resources | Self::ResourceTemplates => Capability::Resources,
            Self::Prompts => Capability::Prompts,
        }
    }

    /// What failing the list closed says (`docs/replies.md`).
    fn failure(self) -> &'static str {
        match self {
            Self::Tools => reply::LIST_EVALUATION_FAILED,
            Self::Resources => {
                "InternalServerException - Policy evaluation failed for list resources"
            }
            Self::ResourceTemplates => {
                "InternalServerException - Policy evaluation failed for list resource templates"
            }
            Self::Prompts => "InternalServerException - Policy evaluation failed for list prompts",
        }
    }

    /// Whether one item may be listed.
    fn listing(self, lister: &mut Lister<'_>, item: &str) -> Result<Listing, EngineError> {
        match self {
            Self::Tools => lister.listing(item),
            Self::Resources => super::resources::listing(lister, item),
            Self::ResourceTemplates => super::resources::template_listing(lister),
            Self::Prompts => super::prompts::listing(lister, item),
        }
    }
}

/// A list request whose answer is still to come in this reply.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingList {
    /// The request's id.
    pub id: Value,
    /// What it lists.
    pub kind: ListKind,
}

impl Rewrite {
    /// The answer to a pending list of `kind` that cannot be filtered: fail closed.
    pub(super) fn list_failed(&self, id: &Value, kind: ListKind) -> String {
        match kind {
            ListKind::Tools => reply::list_failed(id, self.exchange.marking()),
            // Only a tool has a result that says "error"; the other lists fail as JSON-RPC.
            _ => reply::jsonrpc_error(id, reply::INTERNAL_ERROR, kind.failure()),
        }
    }

    /// Filters every governed list in one reply (`result.tools`, and `result.resources`,
    /// `result.resourceTemplates`, `result.prompts` when governed); `expected`, the kind of a
    /// pending list it answers. `Err` is the answer made in its place when no decision can be
    /// made (no policies, an engine error): fail closed, under `id`.
    pub(super) fn filter_lists(
        &self,
        id: &Value,
        message: &mut Value,
        expected: Option<ListKind>,
    ) -> Result<(), String> {
        let govern = self.exchange.shared.engine.govern();
        if self.exchange.snapshot.is_none()
            && let Some(kind) = expected
        {
            return Err(self.list_failed(id, kind));
        }
        for kind in ListKind::ALL {
            if !govern.governs(kind.capability())
                || !message
                    .get("result")
                    .and_then(|r| r.get(kind.key()))
                    .is_some_and(Value::is_array)
            {
                continue;
            }
            self.filter_items(message, kind)
                .map_err(|()| self.list_failed(id, expected.unwrap_or(kind)))?;
        }
        Ok(())
    }

    /// Filters the items of one list in place; `Err` when no decision can be made.
    fn filter_items(&self, message: &mut Value, kind: ListKind) -> Result<(), ()> {
        let started = Instant::now();
        let exchange = &self.exchange;
        let settings = exchange.settings();
        let span = telemetry::partially_authorize_actions(&exchange.span, settings, kind.method());
        let _entered = span.enter();
        let Some(snapshot) = &exchange.snapshot else {
            span.record("policy.errors", "no usable policy set");
            self.observe_list(
                kind,
                String::new(),
                Vec::new(),
                Vec::new(),
                Some("no usable policy set".to_owned()),
                started.elapsed(),
            );
            return Err(());
        };
        let principal = snapshot
            .model()
            .principal_uid(&exchange.identity)
            .to_string();
        span.record("enduser.id", principal.as_str());
        let Some(items) = message
            .get_mut("result")
            .and_then(|r| r.get_mut(kind.key()))
            .and_then(Value::as_array_mut)
        else {
            return Ok(());
        };
        let mut allowed = Vec::with_capacity(items.len());
        let mut denied = Vec::new();
        let mut keep = Vec::with_capacity(items.len());
        let mut lister = snapshot.lister_at(&exchange.identity, exchange.now());
        for item in items.iter() {
            let Some(name) = item.get(kind.item_key()).and_then(Value::as_str) else {
                // Nothing to decide it by: a client could not use it either.
                keep.push(false);
                continue;
            };
            if kind == ListKind::Tools
                && let Some(pins) = snapshot.pins()
                && let Err(drift) = pins.check_listed(name, item)
            {
                // Not the tool the policies were written for: dropped in every mode, and its
                // calls refused, until the lock is updated (`docs/pinning.md`).
                tracing::warn!(tool = name, %drift, "tool does not match tools.lock");
                denied.push(name.to_owned());
                keep.push(false);
                continue;
            }
            match kind.listing(&mut lister, name) {
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
                    self.observe_list(
                        kind,
                        principal,
                        allowed,
                        denied,
                        Some(error),
                        started.elapsed(),
                    );
                    return Err(());
                }
            }
        }
        let mut flags = keep.into_iter();
        items.retain(|_| flags.next().unwrap_or(false));
        telemetry::record_listing(&span, kind == ListKind::Tools, &allowed, &denied);
        self.observe_list(kind, principal, allowed, denied, None, started.elapsed());
        Ok(())
    }

    /// Hands one list record to the observer.
    pub(super) fn observe_list(
        &self,
        kind: ListKind,
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
            method: kind.method(),
            principal,
            allowed,
            denied,
            error,
            latency,
        });
    }
}
