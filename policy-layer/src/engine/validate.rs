//! Policy validation against the gateway's Cedar schema (strict mode): a policy that names an
//! unknown action or a missing or ill-typed `context.input` attribute is a finding, with the
//! policy id, file, line and column.

use std::fmt;

use cedar_policy::{PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

use super::policies::{LoadedPolicies, Position};

/// One validation finding about one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The policy's id.
    pub policy: String,
    /// Where in its file, when Cedar says.
    pub at: Option<Position>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(at) = &self.at {
            write!(f, "{at}: ")?;
        }
        write!(f, "policy `{}`: {}", self.policy, self.message)?;
        Ok(())
    }
}

/// Findings that made a policy set be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Refused(pub Vec<Finding>);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::policies::write_lines(f, &self.0)
    }
}

/// Validates every policy (enforced and shadow) against `schema` in strict mode.
#[must_use]
pub fn validate(policies: &LoadedPolicies, schema: &Schema) -> Vec<Finding> {
    let mut set = PolicySet::new();
    for loaded in &policies.policies {
        // Ids are unique (checked at load).
        let _ = set.add(loaded.policy.clone());
    }
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    let mut findings: Vec<Finding> = result
        .validation_errors()
        .map(|error| {
            let policy = AsRef::<str>::as_ref(error.policy_id()).to_owned();
            let at = policies.get(&policy).and_then(|loaded| {
                let offset = error.labels()?.next()?.offset();
                Some(Position::at(&loaded.origin, &loaded.source, offset))
            });
            Finding {
                policy,
                at,
                message: error.to_string(),
            }
        })
        .collect();
    findings.sort_by_key(ToString::to_string);
    findings
}
