//! Policy sources -> policies with stable ids and enforcement flags.
//!
//! Ids come from `@id("...")` or `<file stem>.<index>`; they are unique across the whole set
//! or loading fails. `@enforcement("LOG_ONLY")` makes a policy a shadow policy (`docs/cedar-model.md`).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{Policy, PolicyId, PolicySet};
use miette::Diagnostic;

/// One policy file's text, with the name its policies are numbered by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// Where it came from, for messages (a path, or any label).
    pub origin: String,
    /// The file stem: unnamed policies get ids `<stem>.<index>`.
    pub stem: String,
    /// The Cedar text.
    pub text: String,
}

impl PolicySource {
    /// A source named by its origin path: the stem is the file name without extension.
    #[must_use]
    pub fn new(origin: impl Into<String>, text: impl Into<String>) -> Self {
        let origin = origin.into();
        let file = origin.rsplit(['/', '\\']).next().unwrap_or(&origin);
        let stem = file.split_once('.').map_or(file, |(s, _)| s).to_owned();
        Self {
            origin,
            stem,
            text: text.into(),
        }
    }
}

/// How a policy takes part in decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// It decides (the default).
    Enforce,
    /// A shadow policy: evaluated and reported, never deciding.
    LogOnly,
}

/// A loaded policy with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    /// The policy, re-id'd to its stable id.
    pub policy: Policy,
    /// Enforcement flag from `@enforcement`.
    pub enforcement: Enforcement,
    /// The source it came from.
    pub origin: String,
    /// The whole text of that source (positions are offsets into it).
    pub source: Arc<str>,
}

impl LoadedPolicy {
    /// The policy's id.
    #[must_use]
    pub fn id(&self) -> &str {
        self.policy.id().as_ref()
    }

    /// Where the policy starts in its source.
    #[must_use]
    pub fn position(&self) -> Position {
        let offset = AsRef::<cedar_policy_core::ast::Policy>::as_ref(&self.policy)
            .loc()
            .map_or(0, cedar_policy_core::parser::Loc::start);
        Position::at(&self.origin, &self.source, offset)
    }
}

/// Every loaded policy, in source order.
#[derive(Debug, Clone, Default)]
pub struct LoadedPolicies {
    /// The policies (temporal clauses rewritten to read `context.temporal`).
    pub policies: Vec<LoadedPolicy>,
    /// The temporal conditions of those policies, indexed by id (`docs/temporal.md`); empty
    /// when no policy has a `when temporal` block.
    pub temporal: Arc<[crate::temporal::Condition]>,
}

impl LoadedPolicies {
    /// The policy with that id.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<&LoadedPolicy> {
        self.policies
            .iter()
            .find(|p| AsRef::<str>::as_ref(p.policy.id()) == id)
    }
}

/// A position in a policy source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The source's origin (file path).
    pub origin: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.origin, self.line, self.column)
    }
}

impl Position {
    /// The position of a byte offset in `text`.
    #[must_use]
    pub fn at(origin: &str, text: &str, offset: usize) -> Self {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Self {
            origin: origin.to_owned(),
            line,
            column,
        }
    }
}

/// Why a set of policy sources could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The Cedar text does not parse.
    #[error("{at}: {message}")]
    Parse {
        /// Where.
        at: Position,
        /// Cedar's message.
        message: String,
    },
    /// Two policies share an id.
    #[error("duplicate policy id `{id}`: in {first} and in {second}")]
    DuplicateId {
        /// The id.
        id: String,
        /// Origin of the first.
        first: String,
        /// Origin of the second.
        second: String,
    },
    /// A policy is not of a supported form.
    #[error("{origin}: policy `{id}`: {message}")]
    Unsupported {
        /// Origin.
        origin: String,
        /// Policy id.
        id: String,
        /// What is wrong.
        message: String,
    },
}

/// Every error found while loading, at least one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_lines(f, &self.0)
    }
}

/// Writes one item per line (error lists for operators).
pub(crate) fn write_lines<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str("\n")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

/// Parses every source as plain Cedar, gives each policy its stable id and checks ids are
/// unique. [`crate::engine::load`] reads temporal blocks too and is what callers want.
///
/// # Errors
/// [`LoadErrors`] listing every parse error (with file, line and column), duplicate id and
/// unsupported policy found.
pub fn load(sources: &[PolicySource]) -> Result<LoadedPolicies, LoadErrors> {
    let mut errors = Vec::new();
    let mut policies = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for source in sources {
        let text: Arc<str> = Arc::from(source.text.as_str());
        let set = match PolicySet::from_str(&source.text) {
            Ok(set) => set,
            Err(e) => {
                let offset = e
                    .labels()
                    .and_then(|mut labels| labels.next())
                    .map_or(0, |l| l.offset());
                errors.push(LoadError::Parse {
                    at: Position::at(&source.origin, &source.text, offset),
                    message: e.to_string(),
                });
                continue;
            }
        };
        if set.templates().next().is_some() {
            errors.push(LoadError::Unsupported {
                origin: source.origin.clone(),
                id: String::new(),
                message: "policy templates are not supported".to_owned(),
            });
            continue;
        }
        // `from_str` ids policies `policy0, policy1, ...` in source order.
        let mut parsed: Vec<(usize, &Policy)> = set
            .policies()
            .map(|p| {
                let n = AsRef::<str>::as_ref(p.id())
                    .trim_start_matches("policy")
                    .parse()
                    .unwrap_or(usize::MAX);
                (n, p)
            })
            .collect();
        parsed.sort_by_key(|(n, _)| *n);
        for (index, (_, policy)) in parsed.into_iter().enumerate() {
            let id = policy
                .annotation("id")
                .map_or_else(|| format!("{}.{index}", source.stem), str::to_owned);
            let enforcement = match policy.annotation("enforcement") {
                None => Enforcement::Enforce,
                Some(v) if v.eq_ignore_ascii_case("ENFORCE") => Enforcement::Enforce,
                Some(v) if v.eq_ignore_ascii_case("LOG_ONLY") => Enforcement::LogOnly,
                Some(other) => {
                    errors.push(LoadError::Unsupported {
                        origin: source.origin.clone(),
                        id,
                        message: format!(
                            "@enforcement must be \"ENFORCE\" or \"LOG_ONLY\", got \"{other}\""
                        ),
                    });
                    continue;
                }
            };
            if let Some(first) = seen.insert(id.clone(), source.origin.clone()) {
                errors.push(LoadError::DuplicateId {
                    id,
                    first,
                    second: source.origin.clone(),
                });
                continue;
            }
            policies.push(LoadedPolicy {
                policy: policy.new_id(PolicyId::new(&id)),
                enforcement,
                origin: source.origin.clone(),
                source: Arc::clone(&text),
            });
        }
    }
    if errors.is_empty() {
        Ok(LoadedPolicies {
            policies,
            temporal: Arc::from(Vec::new()),
        })
    } else {
        Err(LoadErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_annotation_or_stem_and_index() {
        let loaded = load(&[PolicySource::new(
            "policies/refund.cedar",
            r#"permit(principal, action, resource);
               @id("named") forbid(principal, action, resource);
               permit(principal, action, resource);"#,
        )])
        .expect("loads");
        let ids: Vec<&str> = loaded
            .policies
            .iter()
            .map(|p| AsRef::<str>::as_ref(p.policy.id()))
            .collect();
        assert_eq!(ids, ["refund.0", "named", "refund.2"]);
    }

    #[test]
    fn duplicate_ids_fail_loading_naming_both_files() {
        let err = load(&[
            PolicySource::new(
                "a.cedar",
                r#"@id("x") permit(principal, action, resource);"#,
            ),
            PolicySource::new(
                "b.cedar",
                r#"@id("x") permit(principal, action, resource);"#,
            ),
        ])
        .expect_err("duplicate");
        assert_eq!(
            err.to_string(),
            "duplicate policy id `x`: in a.cedar and in b.cedar"
        );
    }

    #[test]
    fn parse_error_names_file_line_and_column() {
        let err = load(&[PolicySource::new(
            "policies/bad.cedar",
            "permit(principal, action, resource);\npermit(principal, action, resource) when { context.input.amount < };",
        )])
        .expect_err("bad");
        let LoadError::Parse { at, .. } = &err.0[0] else {
            panic!("parse error expected: {err}")
        };
        assert_eq!((at.origin.as_str(), at.line), ("policies/bad.cedar", 2));
        assert!(at.column > 40, "{at}");
    }

    #[test]
    fn log_only_annotation_makes_a_shadow_policy() {
        let loaded = load(&[PolicySource::new(
            "s.cedar",
            r#"@enforcement("LOG_ONLY") forbid(principal, action, resource);"#,
        )])
        .expect("loads");
        assert_eq!(loaded.policies[0].enforcement, Enforcement::LogOnly);
        let err = load(&[PolicySource::new(
            "s.cedar",
            r#"@enforcement("MAYBE") forbid(principal, action, resource);"#,
        )])
        .expect_err("bad flag");
        assert!(err.to_string().contains("@enforcement must be"), "{err}");
    }
}
