//! The state store's health: a check every few seconds (Redis only: the memory store always
//! answers), shown on `/metrics` (`mcp_policy_state_store_up`) and in `/readyz`'s text.
//!
//! A store that does not answer does not make the sidecar unready: every replica shares it, so
//! taking them all out of service would stop the calls no limit applies to as well. What the
//! calls that limits apply to get meanwhile is `state.on_error`'s choice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use policy_layer::limit::Limits;
use policy_layer::state::OnError;
use tokio_util::sync::CancellationToken;

use super::admin::Readiness;
use super::metrics::Metrics;

/// Time between two checks of a Redis store.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Whether the state store answered its last check.
#[derive(Debug)]
pub struct StoreHealth {
    limits: Limits,
    metrics: Arc<Metrics>,
    up: AtomicBool,
}

impl StoreHealth {
    /// The health of `limits`' store, counted as up until checked.
    #[must_use]
    pub fn new(limits: Limits, metrics: Arc<Metrics>) -> Arc<Self> {
        metrics.store_up(true);
        Arc::new(Self {
            limits,
            metrics,
            up: AtomicBool::new(true),
        })
    }

    /// Checks the store now and every [`CHECK_EVERY`] until `shutdown` (at once and only once
    /// for the memory store).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(CHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let up = self.limits.store().ping().await.is_ok();
            let was = self.up.swap(up, Ordering::Relaxed);
            self.metrics.store_up(up);
            match (was, up) {
                (true, false) => tracing::warn!(
                    store = self.limits.store().kind(),
                    on_error = self.limits.on_error().as_str(),
                    "the state store does not answer its health check"
                ),
                (false, true) => tracing::info!(
                    store = self.limits.store().kind(),
                    "the state store answers again"
                ),
                _ => {}
            }
            if self.limits.store().kind() == "memory" {
                return;
            }
        }
    }
}

impl Readiness for StoreHealth {
    fn waiting_for(&self) -> Option<&'static str> {
        None
    }

    fn detail(&self) -> Option<String> {
        if self.up.load(Ordering::Relaxed) {
            return None;
        }
        let calls = match self.limits.on_error() {
            OnError::Deny => "refused (503)",
            OnError::Allow => "let through unchecked",
        };
        Some(format!(
            "state store ({}) does not answer: calls that rate limits apply to are {calls} (state.on_error = {})",
            self.limits.store().kind(),
            self.limits.on_error().as_str()
        ))
    }
}
