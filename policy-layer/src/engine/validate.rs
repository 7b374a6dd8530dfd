//! Policy validation against the gateway's Cedar schema (strict mode): a policy that names an
//! unknown action or a missing or ill-typed `context.input` attribute is a finding, with the
//! policy id, file, line and column.

use std::fmt;

use cedar_policy::{PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

use super::policies::{LoadedPolicies, Position};

/// What kind of finding: a schema error, or one of AgentCore's semantic findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingKind {
    /// The policy does not fit the schema (unknown action, missing or ill-typed attribute).
    Schema,
    /// The policy set allows every request of a principal type, tool and resource.
    OverlyPermissive,
    /// The policy set denies every request of a principal type, tool and resource.
    OverlyRestrictive,
    /// A permit that allows nothing, a forbid that denies nothing.
    Ineffective,
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Schema => "schema",
            Self::OverlyPermissive => "overly permissive",
            Self::OverlyRestrictive => "overly restrictive",
            Self::Ineffective => "ineffective",
        })
    }
}

/// One validation finding about one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What kind of finding.
    pub kind: FindingKind,
    /// The policy's id.
    pub policy: String,
    /// Where in its file, when Cedar says.
    pub at: Option<Position>,
    /// What is wrong.
    pub message: String,
    /// A request that shows it, as a `cases.yaml` case (semantic findings, where one exists).
    pub example: Option<serde_json::Value>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(at) = &self.at {
            write!(f, "{at}: ")?;
        }
        write!(f, "policy `{}`: ", self.policy)?;
        if self.kind != FindingKind::Schema {
            write!(f, "{}: ", self.kind)?;
        }
        f.write_str(&self.message)?;
        if let Some(example) = &self.example {
            write!(f, "\n    example: {example}")?;
        }
        Ok(())
    }
}

/// What checking a policy set found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Every finding (schema and semantic).
    pub findings: Vec<Finding>,
    /// What the analysis could not check, and why.
    pub notes: Vec<String>,
    /// What the semantic analysis ran with (`None`: it did not run).
    pub analysis: Option<String>,
}

/// Findings that made a policy set be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Refused {
    /// Every finding.
    pub findings: Vec<Finding>,
    /// What the analysis could not check (shown beside the findings).
    pub notes: Vec<String>,
}

impl From<Report> for Refused {
    fn from(report: Report) -> Self {
        Self {
            findings: report.findings,
            notes: report.notes,
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::policies::write_lines(f, &self.findings)
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
                kind: FindingKind::Schema,
                policy,
                at,
                message: error.to_string(),
                example: None,
            }
        })
        .collect();
    findings.sort_by_key(ToString::to_string);
    findings
}
