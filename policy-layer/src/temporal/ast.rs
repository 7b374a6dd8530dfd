//! The typed syntax of a `temporal { ... }` block (Dogwood's temporal sub-language, as
//! AgentCore accepts it; `docs/temporal.md` has the grammar).

use std::fmt;
use std::sync::Arc;

use super::value::Value;

/// A byte range in the policy source, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// A look-back window, in milliseconds (`within 5m` is 300,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Window(pub i64);

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0 / 1000;
        match s {
            s if s % 86_400 == 0 && s > 0 => write!(f, "{}d", s / 86_400),
            s if s % 3600 == 0 && s > 0 => write!(f, "{}h", s / 3600),
            s if s % 60 == 0 && s > 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

/// The kind of a recorded event (AgentCore's event schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// An authorized request (the one being decided included): inputs.
    Request,
    /// A call that completed successfully: inputs and outputs.
    Response,
    /// A call that was denied or failed: inputs.
    Error,
}

impl EventKind {
    /// The kind's name in a predicate (`::request`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
            Self::Error => "error",
        }
    }

    /// The kind named `name`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "request" => Some(Self::Request),
            "response" => Some(Self::Response),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A temporal condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `a && b && ...`, evaluated left to right (bindings flow rightwards).
    And(Vec<Cond>),
    /// `!a`.
    Not(Box<Cond>),
    /// `formerly within W a`: `a` held at some event in the window (the current one included).
    Formerly(Window, Box<Cond>),
    /// `previous within W a`: `a` held at the immediately preceding event, within the window.
    Previous(Window, Box<Cond>),
    /// `left since within W right`: `right` held at an anchor in the window, and `left` at
    /// every event after it up to the current one.
    Since {
        /// The window.
        window: Window,
        /// Must hold at every event after the anchor.
        left: Box<Cond>,
        /// The anchor.
        right: Box<Cond>,
    },
    /// `exists (x: T). a`.
    Exists {
        /// The variable.
        var: Arc<str>,
        /// Its declared type (`Long`, `String`, `Timepoint`, an entity type).
        ty: String,
        /// The body.
        body: Box<Cond>,
    },
    /// `tp(t)`: binds `t` to the event being looked at.
    Tp(Arc<str>),
    /// An event predicate.
    Pred(Predicate),
    /// `a op b`.
    Cmp {
        /// The operator.
        op: CmpOp,
        /// Left operand.
        left: Expr,
        /// Right operand.
        right: Expr,
        /// Where, for messages.
        span: Span,
    },
}

/// `Ns::Action::"id"::kind{ field: term, ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    /// The action's full uid text's type part (`AgentCore::Action`).
    pub action_type: String,
    /// The action id (`Target___tool`).
    pub action_id: String,
    /// The event kind.
    pub kind: EventKind,
    /// Field constraints, in order.
    pub fields: Vec<(FieldPath, Expr)>,
    /// Where, for messages.
    pub span: Span,
}

/// A field of a recorded event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldPath {
    /// `input.<path>`.
    Input(Vec<String>),
    /// `output.<path>`.
    Output(Vec<String>),
    /// `eventPrincipal`: who made the recorded call.
    EventPrincipal,
    /// `eventResource`: the gateway it was made to.
    EventResource,
    /// `requestId`: the JSON-RPC id of the recorded call.
    RequestId,
    /// `sessionId`: the session (always the current one).
    SessionId,
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Input(p) => write!(f, "input.{}", p.join(".")),
            Self::Output(p) => write!(f, "output.{}", p.join(".")),
            Self::EventPrincipal => f.write_str("eventPrincipal"),
            Self::EventResource => f.write_str("eventResource"),
            Self::RequestId => f.write_str("requestId"),
            Self::SessionId => f.write_str("sessionId"),
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==` (binds a variable on one side when it is unbound).
    Eq,
    /// `!=`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

impl CmpOp {
    /// Whether this is an ordering comparison (integers on both sides).
    #[must_use]
    pub fn is_ordering(self) -> bool {
        !matches!(self, Self::Eq | Self::Ne)
    }
}

/// An arithmetic operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
}

/// Where `principal.<attr>` / `resource.<attr>` read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeRoot {
    /// The request's principal.
    Principal,
    /// The request's resource.
    Resource,
}

/// A term.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal.
    Lit(Value),
    /// A variable (bound by `exists`, `for`, or a predicate field, `tp`, `==`).
    Var(Arc<str>),
    /// `*` or `_`: matches anything, binds nothing.
    Wildcard,
    /// `context.<path>` of the current request (`context.input.amount`).
    Context(Vec<String>),
    /// `principal`, `resource`, or an attribute of them.
    Scope(ScopeRoot, Vec<String>),
    /// `[a, b]`.
    Set(Vec<Expr>),
    /// `a + b`, `a - b`, `a * b` over `Long`.
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    /// `count ...` / `sum ...`.
    Agg(Box<Aggregate>),
}

/// `count for (..). where c` or `sum v for (..). where c`.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// `None` for `count`, the summed variable for `sum`.
    pub sum_of: Option<Arc<str>>,
    /// The `for` domain.
    pub binders: Vec<(Arc<str>, String)>,
    /// The `where` condition.
    pub body: Cond,
    /// Where, for messages.
    pub span: Span,
}

impl Cond {
    /// How many temporal operators (`formerly`, `previous`, `since`) the condition uses; an
    /// AgentCore policy may use at most three.
    #[must_use]
    pub fn operator_count(&self) -> usize {
        match self {
            Self::And(parts) => parts.iter().map(Self::operator_count).sum(),
            Self::Not(c) | Self::Exists { body: c, .. } => c.operator_count(),
            Self::Formerly(_, c) | Self::Previous(_, c) => 1 + c.operator_count(),
            Self::Since { left, right, .. } => 1 + left.operator_count() + right.operator_count(),
            Self::Tp(_) | Self::Pred(_) => 0,
            Self::Cmp { left, right, .. } => left.operator_count() + right.operator_count(),
        }
    }

    /// Whether the condition can depend on events no predicate matches: `previous` reads the
    /// event just before, whatever it is, and `left since right` needs `left` at every event
    /// after the anchor (an unrelated event satisfies a negated left side, not a positive one).
    #[must_use]
    pub fn reads_every_event(&self) -> bool {
        match self {
            Self::And(parts) => parts.iter().any(Self::reads_every_event),
            Self::Not(c) | Self::Exists { body: c, .. } | Self::Formerly(_, c) => {
                c.reads_every_event()
            }
            Self::Previous(..) => true,
            Self::Since { left, right, .. } => {
                !matches!(**left, Self::Not(_))
                    || left.reads_every_event()
                    || right.reads_every_event()
            }
            Self::Tp(_) | Self::Pred(_) => false,
            Self::Cmp { left, right, .. } => left.reads_every_event() || right.reads_every_event(),
        }
    }

    /// Every predicate in the condition, in source order.
    pub fn predicates(&self, out: &mut Vec<Predicate>) {
        match self {
            Self::And(parts) => parts.iter().for_each(|p| p.predicates(out)),
            Self::Not(c) | Self::Exists { body: c, .. } => c.predicates(out),
            Self::Formerly(_, c) | Self::Previous(_, c) => c.predicates(out),
            Self::Since { left, right, .. } => {
                left.predicates(out);
                right.predicates(out);
            }
            Self::Tp(_) => {}
            Self::Pred(p) => out.push(p.clone()),
            Self::Cmp { left, right, .. } => {
                left.predicates(out);
                right.predicates(out);
            }
        }
    }

    /// The longest window the condition looks back over (zero without a temporal operator).
    #[must_use]
    pub fn max_window(&self) -> Window {
        match self {
            Self::And(parts) => parts
                .iter()
                .map(Self::max_window)
                .max()
                .unwrap_or(Window(0)),
            Self::Not(c) | Self::Exists { body: c, .. } => c.max_window(),
            Self::Formerly(w, c) | Self::Previous(w, c) => (*w).max(c.max_window()),
            Self::Since {
                window,
                left,
                right,
            } => (*window).max(left.max_window()).max(right.max_window()),
            Self::Tp(_) | Self::Pred(_) => Window(0),
            Self::Cmp { left, right, .. } => left.max_window().max(right.max_window()),
        }
    }
}

impl Expr {
    fn reads_every_event(&self) -> bool {
        match self {
            Self::Agg(a) => a.body.reads_every_event(),
            Self::Arith(_, l, r) => l.reads_every_event() || r.reads_every_event(),
            _ => false,
        }
    }

    fn operator_count(&self) -> usize {
        match self {
            Self::Agg(a) => a.body.operator_count(),
            Self::Arith(_, l, r) => l.operator_count() + r.operator_count(),
            Self::Set(items) => items.iter().map(Self::operator_count).sum(),
            _ => 0,
        }
    }

    fn predicates(&self, out: &mut Vec<Predicate>) {
        match self {
            Self::Agg(a) => a.body.predicates(out),
            Self::Arith(_, l, r) => {
                l.predicates(out);
                r.predicates(out);
            }
            Self::Set(items) => items.iter().for_each(|i| i.predicates(out)),
            _ => {}
        }
    }

    fn max_window(&self) -> Window {
        match self {
            Self::Agg(a) => a.body.max_window(),
            Self::Arith(_, l, r) => l.max_window().max(r.max_window()),
            Self::Set(items) => items
                .iter()
                .map(Self::max_window)
                .max()
                .unwrap_or(Window(0)),
            _ => Window(0),
        }
    }
}
