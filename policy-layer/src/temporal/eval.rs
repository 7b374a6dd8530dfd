//! Evaluation of a temporal condition over a session's events, at the current request.
//!
//! The semantics are Dogwood's (`docs/temporal.md`): the trace is the recorded events followed
//! by the current request (a `request` event at `now`), and a condition holds at the current
//! request when its relation there is non-empty. Evaluation is relational: a condition maps an
//! environment of variable bindings to the set of extended environments that satisfy it, so
//! that `&&` joins on shared variables and `count` / `sum` aggregate over distinct bindings.
//! It is deterministic and bounded: a step budget caps the work, and running out is an error
//! (the caller fails closed), never a guess.

use std::collections::HashSet;
use std::sync::Arc;

use super::ast::{Aggregate, ArithOp, CmpOp, Cond, Expr, FieldPath, Predicate, ScopeRoot, Window};
use super::history::Event;
use super::value::Value;

/// The action type every AgentCore action lives in.
pub const ACTION_TYPE: &str = "AgentCore::Action";

/// The default number of evaluation steps one condition may take.
pub const DEFAULT_STEP_BUDGET: u64 = 2_000_000;

/// Why a condition could not be evaluated (the decision fails closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The condition needed more steps than the budget allows.
    #[error("temporal evaluation exceeded its budget of {0} steps")]
    Budget(u64),
    /// A value was not of the type the operation needs (for example a `sum` over text).
    #[error("temporal evaluation: {0}")]
    Type(String),
}

/// The current request, as temporal conditions read it.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    /// The request's principal entity.
    pub principal: Value,
    /// Attributes of the principal (`principal.id`).
    pub principal_attrs: Value,
    /// The request's resource entity.
    pub resource: Value,
    /// `context.input`: the arguments, typed.
    pub input: Value,
    /// The session id (`sessionId`).
    pub session: Value,
}

type Env = Vec<(Arc<str>, Value)>;

fn lookup<'e>(env: &'e Env, name: &str) -> Option<&'e Value> {
    env.iter().rev().find(|(n, _)| &**n == name).map(|(_, v)| v)
}

fn without(env: &Env, names: &[&str]) -> Env {
    env.iter()
        .filter(|(n, _)| !names.contains(&&**n))
        .cloned()
        .collect()
}

fn dedup(rows: &mut Vec<Env>) {
    if rows.len() < 2 {
        return;
    }
    let mut seen = HashSet::with_capacity(rows.len());
    rows.retain(|r| seen.insert(r.clone()));
}

/// One evaluation: the trace (history then the current request) and a step budget.
pub struct Evaluator<'a> {
    trace: Vec<&'a Event>,
    request: &'a RequestFacts,
    steps: u64,
    budget: u64,
}

impl<'a> Evaluator<'a> {
    /// An evaluator over `history` (oldest first) followed by `current`.
    #[must_use]
    pub fn new(history: &'a [Event], current: &'a Event, request: &'a RequestFacts) -> Self {
        let mut trace: Vec<&Event> = history.iter().collect();
        trace.push(current);
        Self {
            trace,
            request,
            steps: 0,
            budget: DEFAULT_STEP_BUDGET,
        }
    }

    /// Caps the work of each [`Evaluator::holds`] call.
    #[must_use]
    pub fn with_budget(mut self, budget: u64) -> Self {
        self.budget = budget;
        self
    }

    /// Whether `cond` holds at the current request.
    ///
    /// # Errors
    /// [`EvalError`] when the budget runs out or a value has the wrong type.
    pub fn holds(&mut self, cond: &Cond) -> Result<bool, EvalError> {
        self.steps = 0;
        let now = self.trace.len() - 1;
        Ok(!self.eval(cond, now, &Vec::new())?.is_empty())
    }

    fn step(&mut self, n: u64) -> Result<(), EvalError> {
        self.steps = self.steps.saturating_add(n);
        if self.steps > self.budget {
            Err(EvalError::Budget(self.budget))
        } else {
            Ok(())
        }
    }

    fn in_window(&self, i: usize, j: usize, w: Window) -> bool {
        let d = self.trace[i].time_ms.saturating_sub(self.trace[j].time_ms);
        (0..=w.0).contains(&d)
    }

    fn eval(&mut self, c: &Cond, i: usize, env: &Env) -> Result<Vec<Env>, EvalError> {
        self.step(1)?;
        match c {
            Cond::And(parts) => {
                let mut rows = vec![env.clone()];
                for part in parts {
                    let mut next = Vec::new();
                    for row in &rows {
                        next.extend(self.eval(part, i, row)?);
                    }
                    dedup(&mut next);
                    if next.is_empty() {
                        return Ok(next);
                    }
                    rows = next;
                }
                Ok(rows)
            }
            Cond::Not(inner) => Ok(if self.eval(inner, i, env)?.is_empty() {
                vec![env.clone()]
            } else {
                Vec::new()
            }),
            Cond::Formerly(w, body) => {
                let mut rows = Vec::new();
                for j in (0..=i).rev() {
                    // Not `break`: a replica's clock may record a slightly older time later.
                    if self.in_window(i, j, *w) {
                        rows.extend(self.eval(body, j, env)?);
                    }
                }
                dedup(&mut rows);
                Ok(rows)
            }
            Cond::Previous(w, body) => match i.checked_sub(1) {
                Some(j) if self.in_window(i, j, *w) => self.eval(body, j, env),
                _ => Ok(Vec::new()),
            },
            Cond::Since {
                window,
                left,
                right,
            } => {
                // A left side with no variables of its own reads nothing the anchor binds: find
                // once the events after which it held throughout, instead of once per anchor.
                let mut held_after = None;
                if super::check::free_vars(left).is_empty() {
                    let mut k = i;
                    while k > 0 && !self.eval(left, k, env)?.is_empty() {
                        k -= 1;
                    }
                    // `left` holds at every event after `k`: only anchors at `k` or later can hold.
                    held_after = Some(k);
                }
                let mut rows = Vec::new();
                for j in (0..=i).rev() {
                    if !self.in_window(i, j, *window) {
                        continue;
                    }
                    if let Some(k) = held_after {
                        if j < k {
                            break;
                        }
                        let mut anchored = self.eval(right, j, env)?;
                        rows.append(&mut anchored);
                        continue;
                    }
                    for row in self.eval(right, j, env)? {
                        let mut held = true;
                        for k in j + 1..=i {
                            if self.eval(left, k, &row)?.is_empty() {
                                held = false;
                                break;
                            }
                        }
                        if held {
                            rows.push(row);
                        }
                    }
                }
                dedup(&mut rows);
                Ok(rows)
            }
            Cond::Exists { var, body, .. } => {
                let inner = without(env, &[var]);
                let mut rows: Vec<Env> = self
                    .eval(body, i, &inner)?
                    .into_iter()
                    .map(|row| {
                        let mut out = without(&row, &[var]);
                        if let Some(outer) = lookup(env, var) {
                            out.push((Arc::clone(var), outer.clone()));
                        }
                        out
                    })
                    .collect();
                dedup(&mut rows);
                Ok(rows)
            }
            Cond::Tp(var) => {
                let here = Value::Long(i64::try_from(i).unwrap_or(i64::MAX));
                Ok(match lookup(env, var) {
                    Some(v) if *v == here => vec![env.clone()],
                    Some(_) => Vec::new(),
                    None => {
                        let mut row = env.clone();
                        row.push((Arc::clone(var), here));
                        vec![row]
                    }
                })
            }
            Cond::Pred(p) => Ok(self.matches(p, i, env)?.into_iter().collect()),
            Cond::Cmp {
                op, left, right, ..
            } => self.compare(*op, left, right, i, env),
        }
    }

    fn matches(&mut self, p: &Predicate, i: usize, env: &Env) -> Result<Option<Env>, EvalError> {
        self.step(1)?;
        let event = self.trace[i];
        if p.kind != event.kind || *event.action != p.action_id || p.action_type != ACTION_TYPE {
            return Ok(None);
        }
        let mut row = env.clone();
        for (field, term) in &p.fields {
            let Some(actual) = self.field(event, field) else {
                return Ok(None);
            };
            match term {
                Expr::Wildcard => {}
                Expr::Var(name) => match lookup(&row, name) {
                    Some(bound) if *bound == actual => {}
                    Some(_) => return Ok(None),
                    None => row.push((Arc::clone(name), actual)),
                },
                other => match self.resolve(other, i, &row)? {
                    Some(expected) if expected == actual => {}
                    _ => return Ok(None),
                },
            }
        }
        Ok(Some(row))
    }

    fn field(&self, event: &Event, field: &FieldPath) -> Option<Value> {
        match field {
            FieldPath::Input(path) => event.input.as_ref()?.at_path(path).cloned(),
            FieldPath::Output(path) => event.output.as_ref()?.at_path(path).cloned(),
            FieldPath::EventPrincipal => event.principal.clone(),
            FieldPath::EventResource => event.resource.clone(),
            FieldPath::RequestId => event.request_id.as_deref().map(Value::str),
            // Every event of the trace is of the current session.
            FieldPath::SessionId => Some(self.request.session.clone()),
        }
    }

    fn compare(
        &mut self,
        op: CmpOp,
        left: &Expr,
        right: &Expr,
        i: usize,
        env: &Env,
    ) -> Result<Vec<Env>, EvalError> {
        // `x == e` with `x` unbound binds `x`.
        if op == CmpOp::Eq {
            for (var, other) in [(left, right), (right, left)] {
                if let Expr::Var(name) = var
                    && lookup(env, name).is_none()
                {
                    return Ok(match self.resolve(other, i, env)? {
                        Some(v) => {
                            let mut row = env.clone();
                            row.push((Arc::clone(name), v));
                            vec![row]
                        }
                        None => Vec::new(),
                    });
                }
            }
        }
        let (Some(l), Some(r)) = (self.resolve(left, i, env)?, self.resolve(right, i, env)?) else {
            return Ok(Vec::new());
        };
        let holds = match op {
            CmpOp::Eq => l == r,
            CmpOp::Ne => l != r,
            _ => match (l.as_long(), r.as_long()) {
                (Some(a), Some(b)) => match op {
                    CmpOp::Lt => a < b,
                    CmpOp::Le => a <= b,
                    CmpOp::Gt => a > b,
                    _ => a >= b,
                },
                _ => false,
            },
        };
        Ok(if holds { vec![env.clone()] } else { Vec::new() })
    }

    /// The value of a term, `None` when it has none (an unbound variable, a wildcard, a
    /// missing field, an overflow).
    fn resolve(&mut self, e: &Expr, i: usize, env: &Env) -> Result<Option<Value>, EvalError> {
        Ok(match e {
            Expr::Lit(v) => Some(v.clone()),
            Expr::Var(name) => lookup(env, name).cloned(),
            Expr::Wildcard => None,
            Expr::Context(path) => match path.split_first() {
                Some((head, rest)) if head == "input" => self.request.input.at_path(rest).cloned(),
                _ => None,
            },
            Expr::Scope(root, path) => {
                let (entity, attrs) = match root {
                    ScopeRoot::Principal => {
                        (&self.request.principal, &self.request.principal_attrs)
                    }
                    ScopeRoot::Resource => {
                        (&self.request.resource, &Value::Record(Default::default()))
                    }
                };
                if path.is_empty() {
                    Some(entity.clone())
                } else {
                    attrs.at_path(path).cloned()
                }
            }
            Expr::Set(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match self.resolve(item, i, env)? {
                        Some(v) => out.push(v),
                        None => return Ok(None),
                    }
                }
                Some(Value::set(out))
            }
            Expr::Arith(op, l, r) => {
                let (Some(a), Some(b)) = (
                    self.resolve(l, i, env)?.and_then(|v| v.as_long()),
                    self.resolve(r, i, env)?.and_then(|v| v.as_long()),
                ) else {
                    return Ok(None);
                };
                match op {
                    ArithOp::Add => a.checked_add(b),
                    ArithOp::Sub => a.checked_sub(b),
                    ArithOp::Mul => a.checked_mul(b),
                }
                .map(Value::Long)
            }
            Expr::Agg(agg) => Some(Value::Long(self.aggregate(agg, i, env)?)),
        })
    }

    fn aggregate(&mut self, agg: &Aggregate, i: usize, env: &Env) -> Result<i64, EvalError> {
        let names: Vec<&str> = agg.binders.iter().map(|(n, _)| &**n).collect();
        let inner = without(env, &names);
        let rows = self.eval(&agg.body, i, &inner)?;
        let mut tuples: HashSet<Vec<Value>> = HashSet::with_capacity(rows.len());
        for row in &rows {
            let tuple = names
                .iter()
                .map(|n| {
                    lookup(row, n).cloned().ok_or_else(|| {
                        EvalError::Type(format!("aggregation variable `{n}` is not bound"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            tuples.insert(tuple);
        }
        self.step(u64::try_from(tuples.len()).unwrap_or(u64::MAX))?;
        let Some(sum_of) = &agg.sum_of else {
            return Ok(i64::try_from(tuples.len()).unwrap_or(i64::MAX));
        };
        let column = names
            .iter()
            .position(|n| *n == &**sum_of)
            .ok_or_else(|| EvalError::Type(format!("`{sum_of}` is not in the `for` list")))?;
        let mut total: i128 = 0;
        for tuple in &tuples {
            let n = tuple[column].as_long().ok_or_else(|| {
                EvalError::Type(format!(
                    "`sum {sum_of}` needs integers, got {}",
                    tuple[column]
                ))
            })?;
            total += i128::from(n);
        }
        // Dogwood clamps a total outside the `Long` range rather than failing.
        Ok(i64::try_from(total).unwrap_or(if total < 0 { i64::MIN } else { i64::MAX }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temporal::ast::EventKind;
    use crate::temporal::parse::parse_condition;
    use std::collections::BTreeMap;

    fn facts(input: &[(&str, Value)]) -> RequestFacts {
        RequestFacts {
            principal: Value::entity("AgentCore::OAuthUser", "alice"),
            principal_attrs: Value::Record(BTreeMap::from([(
                Arc::from("id"),
                Value::str("alice"),
            )])),
            resource: Value::entity("AgentCore::Gateway", "gw"),
            input: Value::Record(
                input
                    .iter()
                    .map(|(k, v)| (Arc::from(*k), v.clone()))
                    .collect(),
            ),
            session: Value::str("s"),
        }
    }

    fn event(secs: i64, tool: &str, kind: EventKind, input: &[(&str, Value)]) -> Event {
        let mut e = Event::new(secs * 1000, &format!("T___{tool}"), kind);
        e.resource = Some(Value::entity("AgentCore::Gateway", "gw"));
        e.principal = Some(Value::entity("AgentCore::OAuthUser", "alice"));
        e.input = Some(Value::Record(
            input
                .iter()
                .map(|(k, v)| (Arc::from(*k), v.clone()))
                .collect(),
        ));
        e
    }

    fn holds(
        text: &str,
        history: &[Event],
        now: i64,
        input: &[(&str, Value)],
    ) -> Result<bool, EvalError> {
        let cond = parse_condition(text, 0).expect("parses");
        let current = event(now, "now", EventKind::Request, input);
        let f = facts(input);
        Evaluator::new(history, &current, &f).holds(&cond)
    }

    const A: &str = r#"AgentCore::Action::"T___a""#;

    #[test]
    fn windows_include_an_event_exactly_their_length_old() {
        let h = [event(0, "a", EventKind::Response, &[])];
        let c = format!("formerly within 1m {A}::response{{ eventResource: resource }}");
        assert_eq!(holds(&c, &h, 60, &[]), Ok(true));
        assert_eq!(holds(&c, &h, 61, &[]), Ok(false));
    }

    #[test]
    fn previous_looks_at_the_immediately_preceding_event_only() {
        let h = [
            event(0, "a", EventKind::Request, &[]),
            event(1, "b", EventKind::Request, &[]),
        ];
        let c = format!("previous within 1h {A}::request{{ eventResource: resource }}");
        assert_eq!(holds(&c, &h, 5, &[]), Ok(false));
        assert_eq!(holds(&c, &h[..1], 5, &[]), Ok(true));
        assert_eq!(holds(&c, &[], 5, &[]), Ok(false));
    }

    #[test]
    fn since_with_a_correlated_left_side_checks_each_anchor() {
        // `!a{x: v} since b{x: v}`: only an `a` with the anchor's own `x` breaks it.
        let h = [
            event(0, "b", EventKind::Request, &[("x", Value::Long(1))]),
            event(1, "a", EventKind::Request, &[("x", Value::Long(2))]),
        ];
        let c = format!(
            "exists (v: Long). (!{A}::request{{ eventResource: resource, input.x: v }} since within 1h AgentCore::Action::\"T___b\"::request{{ eventResource: resource, input.x: v }})"
        );
        assert_eq!(holds(&c, &h, 5, &[]), Ok(true));
        let h2 = [
            h[0].clone(),
            event(1, "a", EventKind::Request, &[("x", Value::Long(1))]),
        ];
        assert_eq!(holds(&c, &h2, 5, &[]), Ok(false));
    }

    #[test]
    fn aggregates_deduplicate_on_their_domain() {
        let amt = |n| [("amount", Value::Long(n))];
        let h = [
            event(0, "a", EventKind::Request, &amt(100)),
            event(1, "a", EventKind::Request, &amt(100)),
            event(2, "a", EventKind::Request, &amt(50)),
        ];
        let with_tp = format!(
            "exists (s: Long). (sum x for (x: Long), (t: Timepoint). where (formerly within 1h ({A}::request{{ eventResource: resource, input.amount: x }} && tp(t)))) == s && s == 250"
        );
        let without_tp = format!(
            "exists (s: Long). (sum x for (x: Long). where (formerly within 1h {A}::request{{ eventResource: resource, input.amount: x }})) == s && s == 150"
        );
        assert_eq!(holds(&with_tp, &h, 5, &[]), Ok(true));
        assert_eq!(holds(&without_tp, &h, 5, &[]), Ok(true));
    }

    #[test]
    fn correlation_reads_the_current_requests_input() {
        let h = [event(
            0,
            "a",
            EventKind::Response,
            &[("claim", Value::str("C-1"))],
        )];
        let c = format!(
            "formerly within 1h {A}::response{{ eventResource: resource, input.claim: context.input.claim }}"
        );
        assert_eq!(holds(&c, &h, 5, &[("claim", Value::str("C-1"))]), Ok(true));
        assert_eq!(holds(&c, &h, 5, &[("claim", Value::str("C-2"))]), Ok(false));
        assert_eq!(
            holds(&c, &h, 5, &[]),
            Ok(false),
            "a missing input matches nothing"
        );
    }

    #[test]
    fn running_out_of_budget_is_an_error_not_an_answer() {
        let h: Vec<Event> = (0..50)
            .map(|n| event(n, "a", EventKind::Request, &[]))
            .collect();
        let cond = parse_condition(
            &format!("exists (n: Long). (count for (t: Timepoint). where (formerly within 1h ({A}::request{{ eventResource: resource }} && tp(t)))) == n && n > 3"),
            0,
        )
        .expect("parses");
        let current = event(100, "now", EventKind::Request, &[]);
        let f = facts(&[]);
        assert_eq!(Evaluator::new(&h, &current, &f).holds(&cond), Ok(true));
        assert_eq!(
            Evaluator::new(&h, &current, &f)
                .with_budget(20)
                .holds(&cond),
            Err(EvalError::Budget(20))
        );
    }
}
