//! The rules a temporal condition must follow before it is accepted (AgentCore's and
//! Dogwood's, `docs/temporal.md` lists them): every predicate names `eventResource:
//! resource`, `output.*` only on responses, windows of at most 24 hours, at most three
//! temporal operators per policy, every variable bound by `exists` or `for` and bound by a
//! positive atom before a filter reads it, aggregates only as comparison operands, and
//! ordering comparisons and `sum` on integers.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::ast::{CmpOp, Cond, EventKind, Expr, FieldPath, ScopeRoot, Span, Window};
use super::eval::ACTION_TYPE;
use super::value::Value;

/// The longest window a condition may look back over (AgentCore's quota).
pub const MAX_WINDOW: Window = Window(24 * 3_600_000);

/// The most temporal operators one policy may use (AgentCore's quota).
pub const MAX_OPERATORS_PER_POLICY: usize = 3;

/// A rule a condition breaks, at a byte offset of the policy source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    /// Byte offset in the policy source.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// Checks one temporal block's condition; `at` is where the block starts (for errors that
/// have no narrower place).
#[must_use]
pub fn check(cond: &Cond, at: usize) -> Vec<CheckError> {
    let mut c = Checker {
        errors: Vec::new(),
        at,
    };
    c.cond(cond, &BTreeSet::new(), &BTreeSet::new());
    c.errors
}

type Names = BTreeSet<Arc<str>>;

struct Checker {
    errors: Vec<CheckError>,
    at: usize,
}

impl Checker {
    fn error(&mut self, span: Option<Span>, message: String) {
        let offset = span.map_or(self.at, |s| s.start);
        if !self.errors.iter().any(|e| e.message == message) {
            self.errors.push(CheckError { offset, message });
        }
    }

    fn window(&mut self, w: Window) {
        if w > MAX_WINDOW {
            self.error(
                None,
                format!("window `{w}` exceeds the maximum of 24h for a temporal condition"),
            );
        }
    }

    /// Checks `c` given the variables `declared` by enclosing binders and those already
    /// `bound` (range-restricted) at this point; returns the variables bound after it.
    fn cond(&mut self, c: &Cond, declared: &Names, bound: &Names) -> Names {
        match c {
            Cond::And(parts) => {
                let mut now = bound.clone();
                for p in parts {
                    now = self.cond(p, declared, &now);
                }
                now
            }
            Cond::Not(inner) => {
                for v in free_vars(inner) {
                    if declared.contains(&v) && !bound.contains(&v) {
                        self.error(
                            None,
                            format!(
                                "variable `{v}` is read under `!` before a positive condition binds it: put the condition that binds it first"
                            ),
                        );
                    }
                }
                self.cond(inner, declared, bound);
                bound.clone()
            }
            Cond::Formerly(w, body) | Cond::Previous(w, body) => {
                self.window(*w);
                self.cond(body, declared, bound)
            }
            Cond::Since {
                window,
                left,
                right,
            } => {
                self.window(*window);
                let anchored = self.cond(right, declared, bound);
                for v in free_vars(left) {
                    if declared.contains(&v) && !anchored.contains(&v) {
                        self.error(
                            None,
                            format!(
                                "variable `{v}` on the left of `since` is not bound by its anchor or before it"
                            ),
                        );
                    }
                }
                self.cond(left, declared, &anchored);
                anchored
            }
            Cond::Exists { var, ty, body } => {
                self.binder_type(ty);
                let mut inner_declared = declared.clone();
                inner_declared.insert(Arc::clone(var));
                let mut inner_bound = bound.clone();
                inner_bound.remove(var);
                let out = self.cond(body, &inner_declared, &inner_bound);
                if !out.contains(var) {
                    self.error(
                        None,
                        format!(
                            "`exists ({var}: {ty})` is not range-restricted: bind `{var}` with an event field, `tp({var})` or `{var} == ...` outside any `!`"
                        ),
                    );
                }
                let mut result = out;
                result.remove(var);
                if bound.contains(var) {
                    result.insert(Arc::clone(var));
                }
                result
            }
            Cond::Tp(var) => {
                self.declared_var(var, declared, None);
                let mut out = bound.clone();
                out.insert(Arc::clone(var));
                out
            }
            Cond::Pred(p) => {
                let mut out = bound.clone();
                if p.action_type != ACTION_TYPE {
                    self.error(
                        Some(p.span),
                        format!(
                            "predicate action `{}::\"{}\"` is not an `{ACTION_TYPE}`",
                            p.action_type, p.action_id
                        ),
                    );
                }
                let scoped = p.fields.iter().any(|(f, e)| {
                    *f == FieldPath::EventResource
                        && *e == Expr::Scope(ScopeRoot::Resource, Vec::new())
                });
                if !scoped {
                    self.error(
                        Some(p.span),
                        "temporal predicates do not constrain the matched event to the current request’s resource (add `eventResource: resource`)".to_owned(),
                    );
                }
                for (field, term) in &p.fields {
                    if matches!(field, FieldPath::Output(_)) && p.kind != EventKind::Response {
                        self.error(
                            Some(p.span),
                            format!(
                                "predicate `{ACTION_TYPE}::\"{}\"::{}` mentions field `{field}`, which is not declared on that event (`output.*` fields exist on `response` events only)",
                                p.action_id, p.kind
                            ),
                        );
                    }
                    match term {
                        Expr::Var(v) => {
                            self.declared_var(v, declared, Some(p.span));
                            out.insert(Arc::clone(v));
                        }
                        Expr::Set(_) => self.error(
                            Some(p.span),
                            "temporal predicate arguments cannot contain array constants (e.g. `field: [\"a\", \"b\"]`); use scalar values or `context` field references instead".to_owned(),
                        ),
                        other => {
                            self.no_aggregate(other, p.span);
                            self.reads(other, declared, &out, Some(p.span));
                        }
                    }
                }
                out
            }
            Cond::Cmp {
                op,
                left,
                right,
                span,
            } => self.comparison(*op, left, right, *span, declared, bound),
        }
    }

    fn comparison(
        &mut self,
        op: CmpOp,
        left: &Expr,
        right: &Expr,
        span: Span,
        declared: &Names,
        bound: &Names,
    ) -> Names {
        for side in [left, right] {
            if op.is_ordering() {
                self.numeric(side, span);
            }
            self.aggregates_in(side, declared, bound, span);
        }
        if op == CmpOp::Eq {
            for (var, other) in [(left, right), (right, left)] {
                if let Expr::Var(v) = var
                    && !bound.contains(v)
                    && declared.contains(v)
                {
                    self.reads(other, declared, bound, Some(span));
                    let mut out = bound.clone();
                    out.insert(Arc::clone(v));
                    return out;
                }
            }
        }
        self.reads(left, declared, bound, Some(span));
        self.reads(right, declared, bound, Some(span));
        bound.clone()
    }

    /// Aggregates inside `e`: their bodies are checked, and their `for` variables must be
    /// bound by the body.
    fn aggregates_in(&mut self, e: &Expr, declared: &Names, bound: &Names, span: Span) {
        match e {
            Expr::Agg(agg) => {
                let mut inner_declared = declared.clone();
                let mut inner_bound = bound.clone();
                for (v, ty) in &agg.binders {
                    self.binder_type(ty);
                    inner_declared.insert(Arc::clone(v));
                    inner_bound.remove(v);
                }
                let out = self.cond(&agg.body, &inner_declared, &inner_bound);
                for (v, _) in &agg.binders {
                    if !out.contains(v) {
                        self.error(
                            Some(agg.span),
                            format!(
                                "`for ({v}: ..)` is not range-restricted: the `where` condition must bind `{v}` outside any `!`"
                            ),
                        );
                    }
                }
                if let Some(s) = &agg.sum_of {
                    match agg.binders.iter().find(|(v, _)| v == s) {
                        None => self.error(
                            Some(agg.span),
                            format!("`sum {s}`: `{s}` must be one of the `for` variables"),
                        ),
                        Some((_, ty)) if ty != "Long" => self.error(
                            Some(agg.span),
                            format!("`sum` needs an integer summand: declare `({s}: Long)`"),
                        ),
                        Some(_) => {}
                    }
                }
            }
            Expr::Arith(_, l, r) => {
                self.aggregates_in(l, declared, bound, span);
                self.aggregates_in(r, declared, bound, span);
            }
            Expr::Set(items) => {
                for item in items {
                    self.no_aggregate(item, span);
                }
            }
            _ => {}
        }
    }

    fn no_aggregate(&mut self, e: &Expr, span: Span) {
        match e {
            Expr::Agg(_) => self.error(
                Some(span),
                "an aggregate (`count`, `sum`) may only be an operand of a comparison".to_owned(),
            ),
            Expr::Arith(_, l, r) => {
                self.no_aggregate(l, span);
                self.no_aggregate(r, span);
            }
            Expr::Set(items) => items.iter().for_each(|i| self.no_aggregate(i, span)),
            _ => {}
        }
    }

    fn numeric(&mut self, e: &Expr, span: Span) {
        let bad = match e {
            Expr::Lit(Value::Long(_)) | Expr::Var(_) | Expr::Context(_) | Expr::Agg(_) => false,
            Expr::Arith(_, l, r) => {
                self.numeric(l, span);
                self.numeric(r, span);
                false
            }
            _ => true,
        };
        if bad {
            self.error(
                Some(span),
                "comparison requires numeric operands on both sides".to_owned(),
            );
        }
    }

    /// A term that is read (a filter operand, a field value to match): its variables must
    /// already be bound.
    fn reads(&mut self, e: &Expr, declared: &Names, bound: &Names, span: Option<Span>) {
        match e {
            Expr::Var(v) => {
                if self.declared_var(v, declared, span) && !bound.contains(v) {
                    self.error(
                        span,
                        format!(
                            "variable `{v}` is read before a condition binds it: put the event predicate, `tp({v})` or `{v} == ...` that binds it first"
                        ),
                    );
                }
            }
            Expr::Arith(_, l, r) => {
                self.reads(l, declared, bound, span);
                self.reads(r, declared, bound, span);
            }
            Expr::Set(items) => items
                .iter()
                .for_each(|i| self.reads(i, declared, bound, span)),
            Expr::Agg(agg) => {
                // Correlated variables (free in the body, not in the `for` list) must be bound.
                let own: Names = agg.binders.iter().map(|(v, _)| Arc::clone(v)).collect();
                for v in free_vars(&agg.body) {
                    if !own.contains(&v) && declared.contains(&v) && !bound.contains(&v) {
                        self.error(
                            span,
                            format!(
                                "the aggregate reads `{v}` before a condition binds it: put the condition that binds `{v}` first"
                            ),
                        );
                    }
                }
            }
            Expr::Context(path) => {
                if path.first().map(String::as_str) != Some("input") || path.len() < 2 {
                    self.error(
                        span,
                        format!(
                            "`context.{}`: a temporal condition reads the request through `context.input.<name>`",
                            path.join(".")
                        ),
                    );
                }
            }
            Expr::Lit(_) | Expr::Wildcard | Expr::Scope(..) => {}
        }
    }

    fn declared_var(&mut self, v: &str, declared: &Names, span: Option<Span>) -> bool {
        if declared.contains(v) {
            return true;
        }
        self.error(
            span,
            format!(
                "variable `{v}` is not bound by `exists ({v}: ..)` or a `for` list (write `*` to match any value)"
            ),
        );
        false
    }

    fn binder_type(&mut self, ty: &str) {
        let known = matches!(
            ty,
            "Long" | "String" | "Bool" | "Boolean" | "Timepoint" | "decimal"
        ) || ty.contains("::");
        if !known {
            self.error(None, format!("unknown binder type `{ty}`"));
        }
    }
}

/// Variables a condition mentions that it does not declare itself.
pub(crate) fn free_vars(c: &Cond) -> Names {
    let mut out = Names::new();
    collect_cond(c, &mut Names::new(), &mut out);
    out
}

fn collect_cond(c: &Cond, declared: &mut Names, out: &mut Names) {
    match c {
        Cond::And(parts) => parts.iter().for_each(|p| collect_cond(p, declared, out)),
        Cond::Not(x) | Cond::Formerly(_, x) | Cond::Previous(_, x) => {
            collect_cond(x, declared, out)
        }
        Cond::Since { left, right, .. } => {
            collect_cond(left, declared, out);
            collect_cond(right, declared, out);
        }
        Cond::Exists { var, body, .. } => {
            let fresh = declared.insert(Arc::clone(var));
            collect_cond(body, declared, out);
            if fresh {
                declared.remove(var);
            }
        }
        Cond::Tp(v) => note(v, declared, out),
        Cond::Pred(p) => p
            .fields
            .iter()
            .for_each(|(_, e)| collect_expr(e, declared, out)),
        Cond::Cmp { left, right, .. } => {
            collect_expr(left, declared, out);
            collect_expr(right, declared, out);
        }
    }
}

fn collect_expr(e: &Expr, declared: &mut Names, out: &mut Names) {
    match e {
        Expr::Var(v) => note(v, declared, out),
        Expr::Arith(_, l, r) => {
            collect_expr(l, declared, out);
            collect_expr(r, declared, out);
        }
        Expr::Set(items) => items.iter().for_each(|i| collect_expr(i, declared, out)),
        Expr::Agg(agg) => {
            let fresh: Vec<Arc<str>> = agg
                .binders
                .iter()
                .filter(|(v, _)| declared.insert(Arc::clone(v)))
                .map(|(v, _)| Arc::clone(v))
                .collect();
            collect_cond(&agg.body, declared, out);
            for v in fresh {
                declared.remove(&v);
            }
        }
        Expr::Lit(_) | Expr::Wildcard | Expr::Context(_) | Expr::Scope(..) => {}
    }
}

fn note(v: &Arc<str>, declared: &Names, out: &mut Names) {
    if !declared.contains(v) {
        out.insert(Arc::clone(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temporal::parse::parse_condition;

    fn errors(text: &str) -> Vec<String> {
        let cond = parse_condition(text, 0).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        check(&cond, 0).into_iter().map(|e| e.message).collect()
    }

    const P: &str = r#"AgentCore::Action::"T___transfer""#;

    #[test]
    fn accepts_every_documented_shape() {
        for text in [
            format!(
                "formerly within 1h {P}::response{{ eventResource: resource, output.accountId: context.input.toAccount }}"
            ),
            format!(
                "exists (n: Long). (count for (t: Timepoint). where (formerly within 5m ({P}::request{{ eventResource: resource }} && tp(t)))) == n && n > 3"
            ),
            format!(
                "count for (t: Timepoint). where (formerly within 5m ({P}::request{{ eventResource: resource }} && tp(t))) > 5"
            ),
            format!(
                "exists (total: Long). (sum amt for (amt: Long), (t: Timepoint). where (formerly within 5m ({P}::request{{ eventResource: resource, input.amount: amt }} && tp(t)))) == total && total >= 3000"
            ),
            format!(
                "!{P}::response{{ eventResource: resource }} since within 1h {P}::response{{ eventResource: resource }}"
            ),
            format!(
                "exists (a: Long). (formerly within 1h {P}::request{{ eventResource: resource, input.amount: a }} && a > 100)"
            ),
        ] {
            assert_eq!(errors(&text), Vec::<String>::new(), "{text}");
        }
    }

    #[test]
    fn rejects_predicate_without_event_resource() {
        let e = errors(&format!("formerly within 1h {P}::request{{ input.x: 1 }}"));
        assert!(
            e[0].starts_with("temporal predicates do not constrain the matched event"),
            "{e:?}"
        );
    }

    #[test]
    fn rejects_output_fields_outside_responses_and_long_windows() {
        let e = errors(&format!(
            "formerly within 25h {P}::request{{ eventResource: resource, output.x: 1 }}"
        ));
        assert!(
            e.iter().any(|m| m.contains("exceeds the maximum of 24h")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("`output.x`, which is not declared")),
            "{e:?}"
        );
    }

    #[test]
    fn rejects_free_and_unrestricted_variables() {
        let e = errors(&format!(
            "formerly within 1h {P}::request{{ eventResource: resource, input.user: u }}"
        ));
        assert!(e[0].contains("variable `u` is not bound"), "{e:?}");
        let e = errors("exists (x: Long). (0 < x && x < 2)");
        assert!(
            e.iter()
                .any(|m| m.contains("is read before a condition binds it")),
            "{e:?}"
        );
        let e = errors(&format!(
            "exists (x: String). !{P}::request{{ eventResource: resource, input.user: x }}"
        ));
        assert!(
            e.iter().any(|m| m.contains("not range-restricted")),
            "{e:?}"
        );
    }

    #[test]
    fn rejects_filters_before_their_binder() {
        let e = errors(&format!(
            "exists (a: Long). (a > 100 && formerly within 1h {P}::request{{ eventResource: resource, input.amount: a }})"
        ));
        assert!(e.iter().any(|m| m.contains("`a` is read before")), "{e:?}");
    }

    #[test]
    fn rejects_array_constants_in_predicates_as_the_reference_does() {
        let e = errors(&format!(
            "formerly within 1h {P}::request{{ eventResource: resource, input.tags: [\"a\", \"b\"] }}"
        ));
        assert!(
            e[0].starts_with("temporal predicate arguments cannot contain array constants"),
            "{e:?}"
        );
    }

    #[test]
    fn rejects_non_integer_ordering_and_sum() {
        let e = errors(&format!(
            "formerly within 1h {P}::request{{ eventResource: resource }} && \"a\" < 3"
        ));
        assert!(
            e.iter()
                .any(|m| m == "comparison requires numeric operands on both sides"),
            "{e:?}"
        );
        let e = errors(&format!(
            "exists (s: Long). (sum a for (a: String), (t: Timepoint). where ({P}::request{{ eventResource: resource, input.a: a }} && tp(t))) == s"
        ));
        assert!(
            e.iter()
                .any(|m| m.contains("`sum` needs an integer summand")),
            "{e:?}"
        );
    }
}
