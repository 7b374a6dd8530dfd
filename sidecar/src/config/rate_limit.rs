//! `[[rate_limit]]`: how many calls a caller may make, per tool or overall
//! (`docs/rate-limits.md`). The tables are the library's `RateLimitConfig`, read as they are
//! and validated together into a `LimitSet`; they are re-read when the config file changes
//! (`feed/limits.rs`), the only keys besides `state.on_error` that apply without a restart.
//!
//! The tables are set in the file only: an environment variable names one key of one
//! section, and cannot say which table it means.

use policy_layer::limit::{LimitSet, RateLimitConfig};

use super::error::KeyError;

/// The section as written: every `[[rate_limit]]` table, in file order.
pub type RateLimitSection = Vec<RateLimitConfig>;

/// Validates every table.
///
/// # Errors
/// A [`KeyError`] on `rate_limit` naming the limit and its key at fault
/// (`rate_limit: "refunds": key "jwt.": jwt.<claim> needs a claim name`).
pub fn settings(tables: &[RateLimitConfig]) -> Result<LimitSet, KeyError> {
    LimitSet::from_config(tables).map_err(|e| {
        let message = e.to_string();
        let message = message
            .strip_prefix("rate_limit ")
            .unwrap_or(&message)
            .to_owned();
        KeyError::new("rate_limit", message)
    })
}
