//! One finding per policy and kind: an unconditional permit is overly permissive in every
//! request environment it covers (each principal type calling each tool), and a finding per
//! environment, each with its example, buries the one thing to fix. The environments are
//! named together in one finding, with the first environment's example.

use super::super::validate::{Finding, FindingKind};

/// Where the environment starts in a semantic finding's message, and where it may end.
const OPENING: &str = "every request of ";
const ENDINGS: [&str; 2] = [" (", " although "];

/// The message around its environment: (before, environment, after).
fn split(message: &str) -> Option<(&str, &str, &str)> {
    let start = message.find(OPENING)? + OPENING.len();
    let rest = &message[start..];
    let end = ENDINGS.iter().filter_map(|e| rest.find(e)).min()?;
    Some((&message[..start], &rest[..end], &rest[end..]))
}

/// Merges the overly permissive and overly restrictive findings of one policy that differ
/// only in their request environment; everything else stays as it is, in its place.
pub(super) fn per_policy(findings: Vec<Finding>) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::with_capacity(findings.len());
    // For each finding of `out` that can take others: the environments it names so far.
    let mut scopes: Vec<Option<Vec<String>>> = Vec::with_capacity(findings.len());
    for finding in findings {
        let groupable = matches!(
            finding.kind,
            FindingKind::OverlyPermissive | FindingKind::OverlyRestrictive
        );
        let parts = split(&finding.message)
            .filter(|_| groupable)
            .map(|(before, scope, after)| (before.to_owned(), scope.to_owned(), after.to_owned()));
        let Some((before, scope, after)) = parts else {
            out.push(finding);
            scopes.push(None);
            continue;
        };
        let same = out.iter().zip(scopes.iter_mut()).find(|(seen, scopes)| {
            scopes.is_some()
                && seen.kind == finding.kind
                && seen.policy == finding.policy
                && split(&seen.message).is_some_and(|(b, _, a)| b == before && a == after)
        });
        match same {
            Some((_, Some(scopes))) => scopes.push(scope),
            _ => {
                out.push(finding);
                scopes.push(Some(vec![scope]));
            }
        }
    }
    for (finding, scopes) in out.iter_mut().zip(scopes) {
        if let Some(scopes) = scopes.filter(|s| s.len() > 1)
            && let Some((before, _, after)) = split(&finding.message)
        {
            finding.message = format!("{before}{}{after}", scopes.join(", of "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permissive(policy: &str, scope: &str, names: &str) -> Finding {
        Finding {
            kind: FindingKind::OverlyPermissive,
            policy: policy.to_owned(),
            at: None,
            message: format!(
                "the policies allow every request of {scope} ({names}; no forbid or condition ever denies one)"
            ),
            example: Some(serde_json::json!({"tool": scope})),
        }
    }

    #[test]
    fn the_environments_of_one_policy_make_one_finding_with_the_first_example() {
        let findings = vec![
            permissive("open", "A calling x on G", "`open`"),
            permissive("open", "B calling x on G", "`open`"),
            permissive("other", "A calling y on G", "`other`"),
            permissive("open", "A calling z on G", "`open`"),
            // Another set of permits in this environment: a finding of its own.
            permissive("open", "B calling w on G", "`open`, `also`"),
        ];
        let grouped = per_policy(findings);
        assert_eq!(grouped.len(), 3, "{grouped:#?}");
        assert_eq!(
            grouped[0].message,
            "the policies allow every request of A calling x on G, of B calling x on G, of A calling z on G (`open`; no forbid or condition ever denies one)"
        );
        assert_eq!(
            grouped[0].example,
            Some(serde_json::json!({"tool": "A calling x on G"}))
        );
        assert_eq!(grouped[1].policy, "other");
        assert!(grouped[2].message.contains("`open`, `also`"));
    }

    #[test]
    fn other_findings_are_left_alone() {
        let ineffective = Finding {
            kind: FindingKind::Ineffective,
            policy: "p".to_owned(),
            at: None,
            message: "this permit can allow no request: every request of nothing (x)".to_owned(),
            example: None,
        };
        let grouped = per_policy(vec![ineffective.clone(), ineffective.clone()]);
        assert_eq!(grouped, vec![ineffective.clone(), ineffective]);
    }
}
