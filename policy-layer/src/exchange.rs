//! What a request is handled with: the layer's [`Shared`] state, and the per-request
//! [`Exchange`], built once the caller is known and read by every later step (deciding calls,
//! rewriting the reply), so no step takes more than it needs to name.

use std::sync::Arc;

use tracing::Span;

use crate::auth::Identity;
use crate::auth::gate::Gate;
use crate::clock::{Clock, Timestamp};
use crate::config::Settings;
use crate::engine::{PolicyEngine, Snapshot};
use crate::limit::Limits;
use crate::protocol::origin::Origins;
use crate::protocol::session::Sessions;
use crate::protocol::{ProtocolVersion, ResultMarking};
use crate::record::DecisionObserver;

/// The state every request of one layer shares.
pub(crate) struct Shared {
    pub(crate) engine: PolicyEngine,
    pub(crate) settings: Arc<Settings>,
    pub(crate) observer: Arc<dyn DecisionObserver>,
    pub(crate) gate: Gate,
    pub(crate) origins: Origins,
    pub(crate) sessions: Arc<Sessions>,
    /// Where `context.system.now` comes from.
    pub(crate) clock: Arc<dyn Clock>,
    /// The rate limits, checked before Cedar; `None`: none configured.
    pub(crate) limits: Option<Limits>,
    /// Where policy sessions (temporal policies' histories) are kept; `None`: nowhere, and a
    /// call that needs one is refused.
    pub(crate) session_store: Option<crate::state::Store>,
}

/// One request after authentication: who calls, the policies it is decided by (one atomic
/// load, held for the whole request and its reply), the protocol it speaks, and its span.
#[derive(Clone)]
pub(crate) struct Exchange {
    pub(crate) shared: Arc<Shared>,
    pub(crate) identity: Arc<Identity>,
    pub(crate) snapshot: Option<Arc<Snapshot>>,
    pub(crate) version: ProtocolVersion,
    pub(crate) span: Span,
}

impl Exchange {
    /// A request by `identity` speaking `version`, decided by the current policies.
    pub(crate) fn new(
        shared: &Arc<Shared>,
        identity: Arc<Identity>,
        version: ProtocolVersion,
        span: Span,
    ) -> Self {
        Self {
            snapshot: shared.engine.snapshot(),
            shared: Arc::clone(shared),
            identity,
            version,
            span,
        }
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    pub(crate) fn observer(&self) -> &dyn DecisionObserver {
        &*self.shared.observer
    }

    /// The time now, as policies see it (`context.system.now`).
    pub(crate) fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    /// How results the layer makes are marked for this request's protocol.
    pub(crate) fn marking(&self) -> ResultMarking {
        self.version.results()
    }
}
