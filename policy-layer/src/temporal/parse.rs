//! The parser of a `temporal { ... }` block's body: tokens, then recursive descent with
//! backtracking where Dogwood's grammar is ambiguous (a `(` opens a condition, an aggregate
//! or an arithmetic group; the first that parses wins, as in the reference grammar).

use std::sync::Arc;

use super::ast::{
    Aggregate, ArithOp, CmpOp, Cond, EventKind, Expr, FieldPath, Predicate, ScopeRoot, Span, Window,
};
use super::value::Value;

/// A syntax error at a byte offset of the policy source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Byte offset in the policy source.
    pub offset: usize,
    /// What is wrong, in lower case.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    /// `5m`, `1h`: a window literal, in milliseconds.
    Duration(i64),
    Punct(&'static str),
    /// `?p` / `$t`: macro sigils, which only macros use.
    Sigil(String),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

const PUNCTS: [&str; 20] = [
    "::", "&&", "||", "==", "!=", "<=", ">=", "{", "}", "(", ")", "[", "]", ",", ":", ".", "!",
    "<", ">", "+",
];

fn lex(text: &str, base: usize) -> Result<Vec<Token>, SyntaxError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, message: String| SyntaxError {
        offset: base + at,
        message,
    };
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if text[i..].starts_with("//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        if c == b'"' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(ch) = text[i..].chars().next() else {
                    return Err(err(start, "unterminated string".to_owned()));
                };
                i += ch.len_utf8();
                match ch {
                    '"' => break,
                    '\\' => {
                        let Some(esc) = text[i..].chars().next() else {
                            return Err(err(start, "unterminated string".to_owned()));
                        };
                        i += esc.len_utf8();
                        s.push(match esc {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            '0' => '\0',
                            other => other,
                        });
                    }
                    other => s.push(other),
                }
            }
            out.push(Token {
                tok: Tok::Str(s),
                start,
                end: i,
            });
            continue;
        }
        if c.is_ascii_digit() {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &text[start..i];
            let n: i64 = digits
                .parse()
                .map_err(|_| err(start, format!("integer `{digits}` is out of range")))?;
            let unit_start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                i += 1;
            }
            let unit = &text[unit_start..i];
            let tok = if unit.is_empty() {
                Tok::Int(n)
            } else {
                let factor = match unit {
                    "s" => 1_000,
                    "m" => 60_000,
                    "h" => 3_600_000,
                    "d" => 86_400_000,
                    other => {
                        return Err(err(
                            unit_start,
                            format!("unknown time unit `{other}` (use s, m, h or d)"),
                        ));
                    }
                };
                Tok::Duration(
                    n.checked_mul(factor)
                        .ok_or_else(|| err(start, "window is out of range".to_owned()))?,
                )
            };
            out.push(Token { tok, start, end: i });
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c == b'?' || c == b'$' {
            i += 1;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = text[start..i].to_owned();
            let tok = if c == b'?' || c == b'$' {
                Tok::Sigil(word)
            } else {
                Tok::Ident(word)
            };
            out.push(Token { tok, start, end: i });
            continue;
        }
        if c == b'-' || c == b'*' {
            i += 1;
            out.push(Token {
                tok: Tok::Punct(if c == b'-' { "-" } else { "*" }),
                start,
                end: i,
            });
            continue;
        }
        let Some(p) = PUNCTS.iter().find(|p| text[i..].starts_with(**p)) else {
            let ch = text[i..].chars().next().unwrap_or('?');
            return Err(err(i, format!("unexpected character `{ch}`")));
        };
        i += p.len();
        out.push(Token {
            tok: Tok::Punct(p),
            start,
            end: i,
        });
    }
    Ok(out)
}

/// Parses a temporal block body that starts at byte `base` of the policy source.
///
/// # Errors
/// [`SyntaxError`] at the first token that does not fit the grammar.
pub fn parse_condition(body: &str, base: usize) -> Result<Cond, SyntaxError> {
    let mut tokens = lex(body, base)?;
    for t in &mut tokens {
        t.start += base;
        t.end += base;
    }
    let mut p = Parser {
        tokens,
        pos: 0,
        end: base + body.len(),
        furthest: None,
    };
    let cond = p.condition()?;
    if p.pos < p.tokens.len() {
        return Err(p.error_here("expected `&&` or the end of the temporal block"));
    }
    Ok(cond)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    end: usize,
    /// The error that got furthest, reported when every alternative fails.
    furthest: Option<SyntaxError>,
}

type PResult<T> = Result<T, SyntaxError>;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.tokens.get(self.pos + n).map(|t| &t.tok)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |t| t.start)
    }

    fn prev_end(&self) -> usize {
        self.pos
            .checked_sub(1)
            .and_then(|i| self.tokens.get(i))
            .map_or(self.end, |t| t.end)
    }

    fn error_here(&self, message: &str) -> SyntaxError {
        let found = match self.peek() {
            None => "the end of the block".to_owned(),
            Some(Tok::Ident(s) | Tok::Sigil(s)) => format!("`{s}`"),
            Some(Tok::Str(s)) => format!("{s:?}"),
            Some(Tok::Int(n)) => format!("`{n}`"),
            Some(Tok::Duration(_)) => "a window".to_owned(),
            Some(Tok::Punct(p)) => format!("`{p}`"),
        };
        SyntaxError {
            offset: self.offset(),
            message: format!("{message}, found {found}"),
        }
    }

    fn remember(&mut self, e: SyntaxError) {
        if self.furthest.as_ref().is_none_or(|f| e.offset >= f.offset) {
            self.furthest = Some(e);
        }
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Some(Tok::Punct(q)) if *q == p)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == w)
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        let yes = self.is_punct(p);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn eat_word(&mut self, w: &str) -> bool {
        let yes = self.is_word(w);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn expect_punct(&mut self, p: &str) -> PResult<()> {
        if self.eat_punct(p) {
            Ok(())
        } else {
            Err(self.error_here(&format!("expected `{p}`")))
        }
    }

    fn expect_word(&mut self, w: &str) -> PResult<()> {
        if self.eat_word(w) {
            Ok(())
        } else {
            Err(self.error_here(&format!("expected `{w}`")))
        }
    }

    fn ident(&mut self, what: &str) -> PResult<String> {
        match self.peek() {
            Some(Tok::Ident(s)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            Some(Tok::Sigil(_)) => Err(SyntaxError {
                offset: self.offset(),
                message: "macro parameters (`?p`, `$t`) are only allowed in macro definitions, which are not supported".to_owned(),
            }),
            _ => Err(self.error_here(&format!("expected {what}"))),
        }
    }

    /// Tries `f`; on failure restores the position and remembers the error.
    fn attempt<T>(&mut self, f: impl FnOnce(&mut Self) -> PResult<T>) -> Option<T> {
        let save = self.pos;
        match f(self) {
            Ok(v) => Some(v),
            Err(e) => {
                self.remember(e);
                self.pos = save;
                None
            }
        }
    }

    fn fail(&mut self, fallback: SyntaxError) -> SyntaxError {
        match self.furthest.take() {
            Some(f) if f.offset > fallback.offset => f,
            _ => fallback,
        }
    }

    // condition := conj_since ("&&" conj_since)*
    fn condition(&mut self) -> PResult<Cond> {
        let mut parts = vec![self.conj_since()?];
        loop {
            if self.eat_punct("&&") {
                parts.push(self.conj_since()?);
            } else if self.is_punct("||") {
                return Err(SyntaxError {
                    offset: self.offset(),
                    message: "`||` is not part of the temporal language: write one policy per alternative".to_owned(),
                });
            } else {
                break;
            }
        }
        Ok(if parts.len() == 1 {
            parts.pop().unwrap_or(Cond::And(Vec::new()))
        } else {
            Cond::And(parts)
        })
    }

    // conj_since := "!"* conjunct ("since" within atom)?
    fn conj_since(&mut self) -> PResult<Cond> {
        let mut bangs = 0;
        while self.eat_punct("!") {
            bangs += 1;
        }
        let mut left = self.conjunct()?;
        for _ in 0..bangs {
            left = Cond::Not(Box::new(left));
        }
        if self.eat_word("since") {
            let window = self.within()?;
            let right = self.atom()?;
            return Ok(Cond::Since {
                window,
                left: Box::new(left),
                right: Box::new(right),
            });
        }
        Ok(left)
    }

    fn within(&mut self) -> PResult<Window> {
        self.expect_word("within")?;
        match self.peek() {
            Some(Tok::Duration(ms)) => {
                let w = Window(*ms);
                self.pos += 1;
                Ok(w)
            }
            Some(Tok::Sigil(_)) => Err(SyntaxError {
                offset: self.offset(),
                message: "macro parameters (`?w`) are only allowed in macro definitions, which are not supported".to_owned(),
            }),
            _ => Err(self.error_here("expected a window such as `5m` (units s, m, h, d)")),
        }
    }

    // conjunct := comparison | "(" condition ")" | formerly | previous | exists | tp | predicate
    fn conjunct(&mut self) -> PResult<Cond> {
        if self.is_word("formerly") || self.is_word("previous") {
            let previous = self.is_word("previous");
            self.pos += 1;
            let window = self.within()?;
            let body = Box::new(self.atom()?);
            return Ok(if previous {
                Cond::Previous(window, body)
            } else {
                Cond::Formerly(window, body)
            });
        }
        if self.is_word("exists") && self.peek_at(1) == Some(&Tok::Punct("(")) {
            self.pos += 1;
            let (var, ty) = self.typed_binder()?;
            self.expect_punct(".")?;
            let body = self.condition()?;
            return Ok(Cond::Exists {
                var,
                ty,
                body: Box::new(body),
            });
        }
        self.atom()
    }

    // atom := comparison | "(" condition ")" | tp | predicate
    fn atom(&mut self) -> PResult<Cond> {
        let start = self.offset();
        if let Some(c) = self.attempt(Self::comparison) {
            return Ok(c);
        }
        if self.is_punct("(")
            && let Some(c) = self.attempt(|p| {
                p.pos += 1;
                let c = p.condition()?;
                p.expect_punct(")")?;
                Ok(c)
            })
        {
            return Ok(c);
        }
        if self.is_word("tp") && self.peek_at(1) == Some(&Tok::Punct("(")) {
            self.pos += 2;
            let var = self.ident("a variable")?;
            self.expect_punct(")")?;
            return Ok(Cond::Tp(Arc::from(var)));
        }
        if matches!(self.peek(), Some(Tok::Ident(_))) && self.peek_at(1) == Some(&Tok::Punct("(")) {
            return Err(SyntaxError {
                offset: start,
                message: "temporal macros (`name(...)`) are not supported: write the condition out"
                    .to_owned(),
            });
        }
        if let Some(c) = self.attempt(Self::predicate) {
            return Ok(c);
        }
        let fallback = self.error_here(
            "expected a condition (an event predicate, `formerly`, `exists`, `tp(..)`, a comparison or `(`)",
        );
        Err(self.fail(fallback))
    }

    fn typed_binder(&mut self) -> PResult<(Arc<str>, String)> {
        self.expect_punct("(")?;
        let var = self.ident("a variable")?;
        self.expect_punct(":")?;
        let mut ty = self.ident("a type")?;
        while self.eat_punct("::") {
            ty.push_str("::");
            ty.push_str(&self.ident("a type name")?);
        }
        self.expect_punct(")")?;
        Ok((Arc::from(var), ty))
    }

    // predicate := ident ("::" ident)* "::" string "::" kind "{" fields? "}" ("{" fields? "}")*
    fn predicate(&mut self) -> PResult<Cond> {
        let start = self.offset();
        let mut action_type = self.ident("an action (`AgentCore::Action::\"<tool>\"`)")?;
        let action_id = loop {
            self.expect_punct("::")?;
            match self.peek() {
                Some(Tok::Str(s)) => {
                    let s = s.clone();
                    self.pos += 1;
                    break s;
                }
                _ => {
                    action_type.push_str("::");
                    action_type.push_str(&self.ident("a name or a quoted action id")?);
                }
            }
        };
        self.expect_punct("::")?;
        let kind_at = self.offset();
        let kind_name = self.ident("an event kind (`request`, `response` or `error`)")?;
        let kind = EventKind::parse(&kind_name).ok_or_else(|| SyntaxError {
            offset: kind_at,
            message: format!(
                "unknown event kind `{kind_name}`: AgentCore records `request`, `response` and `error` events"
            ),
        })?;
        let mut fields = Vec::new();
        self.expect_punct("{")?;
        self.fields(&mut fields)?;
        // Field-injection blocks: `P{ a: 1 }{ b: 2 }` is `P{ a: 1, b: 2 }`.
        while self.eat_punct("{") {
            self.fields(&mut fields)?;
        }
        Ok(Cond::Pred(Predicate {
            action_type,
            action_id,
            kind,
            fields,
            span: Span {
                start,
                end: self.prev_end(),
            },
        }))
    }

    /// Fields up to and including the closing `}`.
    fn fields(&mut self, out: &mut Vec<(FieldPath, Expr)>) -> PResult<()> {
        if self.eat_punct("}") {
            return Ok(());
        }
        loop {
            let at = self.offset();
            let mut path = vec![self.ident("a field name")?];
            while self.eat_punct(".") {
                path.push(self.ident("a field name")?);
            }
            let field = field_path(path).map_err(|message| SyntaxError {
                offset: at,
                message,
            })?;
            self.expect_punct(":")?;
            let term = self.arith()?;
            out.push((field, term));
            if self.eat_punct(",") {
                continue;
            }
            self.expect_punct("}")?;
            return Ok(());
        }
    }

    // comparison := arith cmp_op arith
    fn comparison(&mut self) -> PResult<Cond> {
        let start = self.offset();
        let left = self.arith()?;
        let op = match self.peek() {
            Some(Tok::Punct("==")) => CmpOp::Eq,
            Some(Tok::Punct("!=")) => CmpOp::Ne,
            Some(Tok::Punct("<")) => CmpOp::Lt,
            Some(Tok::Punct("<=")) => CmpOp::Le,
            Some(Tok::Punct(">")) => CmpOp::Gt,
            Some(Tok::Punct(">=")) => CmpOp::Ge,
            _ => return Err(self.error_here("expected a comparison operator")),
        };
        self.pos += 1;
        let right = self.arith()?;
        Ok(Cond::Cmp {
            op,
            left,
            right,
            span: Span {
                start,
                end: self.prev_end(),
            },
        })
    }

    // arith := mul (("+" | "-") mul)*
    fn arith(&mut self) -> PResult<Expr> {
        let mut left = self.mul()?;
        loop {
            let op = if self.is_punct("+") {
                ArithOp::Add
            } else if self.is_punct("-") {
                ArithOp::Sub
            } else {
                return Ok(left);
            };
            self.pos += 1;
            let right = self.mul()?;
            left = Expr::Arith(op, Box::new(left), Box::new(right));
        }
    }

    // mul := term ("*" term)*
    fn mul(&mut self) -> PResult<Expr> {
        let mut left = self.term()?;
        while self.is_punct("*") {
            self.pos += 1;
            let right = self.term()?;
            left = Expr::Arith(ArithOp::Mul, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn term(&mut self) -> PResult<Expr> {
        let start = self.offset();
        match self.peek().cloned() {
            Some(Tok::Int(n)) => {
                self.pos += 1;
                Ok(Expr::Lit(Value::Long(n)))
            }
            Some(Tok::Punct("-")) => match self.peek_at(1) {
                Some(Tok::Int(n)) => {
                    let n = *n;
                    self.pos += 2;
                    Ok(Expr::Lit(Value::Long(-n)))
                }
                _ => Err(self.error_here("expected a term")),
            },
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Expr::Lit(Value::str(&s)))
            }
            Some(Tok::Punct("*")) => {
                self.pos += 1;
                Ok(Expr::Wildcard)
            }
            Some(Tok::Punct("[")) => {
                self.pos += 1;
                let mut items = Vec::new();
                if !self.eat_punct("]") {
                    loop {
                        items.push(self.term()?);
                        if self.eat_punct("]") {
                            break;
                        }
                        self.expect_punct(",")?;
                    }
                }
                Ok(Expr::Set(items))
            }
            Some(Tok::Punct("(")) => {
                if let Some(e) = self.attempt(|p| {
                    p.pos += 1;
                    let e = p.aggregate()?;
                    p.expect_punct(")")?;
                    Ok(e)
                }) {
                    return Ok(e);
                }
                self.pos += 1;
                let e = self.arith()?;
                self.expect_punct(")")?;
                Ok(e)
            }
            Some(Tok::Ident(word)) => self.word_term(&word, start),
            Some(Tok::Sigil(_)) => Err(SyntaxError {
                offset: start,
                message: "macro parameters (`?p`, `$t`) are only allowed in macro definitions, which are not supported".to_owned(),
            }),
            _ => Err(self.error_here("expected a term")),
        }
    }

    fn word_term(&mut self, word: &str, start: usize) -> PResult<Expr> {
        match word {
            "true" | "false" => {
                self.pos += 1;
                Ok(Expr::Lit(Value::Bool(word == "true")))
            }
            "_" => {
                self.pos += 1;
                Ok(Expr::Wildcard)
            }
            "count" | "sum" => self.aggregate(),
            "decimal" if self.peek_at(1) == Some(&Tok::Punct("(")) => {
                self.pos += 2;
                let Some(Tok::Str(text)) = self.peek().cloned() else {
                    return Err(self.error_here("expected a quoted decimal"));
                };
                self.pos += 1;
                self.expect_punct(")")?;
                Value::decimal_from_text(&text)
                    .map(Expr::Lit)
                    .ok_or_else(|| SyntaxError {
                        offset: start,
                        message: format!("`{text}` is not a decimal (at most 4 fraction digits)"),
                    })
            }
            "context" => {
                self.pos += 1;
                let mut path = Vec::new();
                while self.eat_punct(".") {
                    path.push(self.ident("a field name")?);
                }
                if path.is_empty() {
                    return Err(self.error_here("expected `.` after `context`"));
                }
                Ok(Expr::Context(path))
            }
            "principal" | "resource" => {
                self.pos += 1;
                let root = if word == "principal" {
                    ScopeRoot::Principal
                } else {
                    ScopeRoot::Resource
                };
                let mut path = Vec::new();
                while self.eat_punct(".") {
                    path.push(self.ident("an attribute name")?);
                }
                Ok(Expr::Scope(root, path))
            }
            _ => {
                // An entity `Ns::Type::"id"`, or a variable.
                if self.peek_at(1) == Some(&Tok::Punct("::")) {
                    let mut ty = self.ident("a type name")?;
                    loop {
                        self.expect_punct("::")?;
                        match self.peek().cloned() {
                            Some(Tok::Str(id)) => {
                                self.pos += 1;
                                return Ok(Expr::Lit(Value::entity(&ty, &id)));
                            }
                            _ => {
                                ty.push_str("::");
                                ty.push_str(&self.ident("a name or a quoted id")?);
                            }
                        }
                    }
                }
                self.pos += 1;
                Ok(Expr::Var(Arc::from(word)))
            }
        }
    }

    // aggregate := "count" for "where" condition | "sum" ident for "where" condition
    fn aggregate(&mut self) -> PResult<Expr> {
        let start = self.offset();
        let sum_of = if self.eat_word("sum") {
            Some(Arc::from(self.ident("the summed variable")?))
        } else {
            self.expect_word("count")?;
            None
        };
        self.expect_word("for")?;
        let mut binders = vec![self.typed_binder()?];
        while self.eat_punct(",") {
            binders.push(self.typed_binder()?);
        }
        self.expect_punct(".")?;
        self.expect_word("where")?;
        let body = self.condition()?;
        Ok(Expr::Agg(Box::new(Aggregate {
            sum_of,
            binders,
            body,
            span: Span {
                start,
                end: self.prev_end(),
            },
        })))
    }
}

fn field_path(mut path: Vec<String>) -> Result<FieldPath, String> {
    let rest = path.split_off(1);
    let head = path.pop().unwrap_or_default();
    match (head.as_str(), rest.is_empty()) {
        ("input", false) => Ok(FieldPath::Input(rest)),
        ("output", false) => Ok(FieldPath::Output(rest)),
        ("eventPrincipal", true) => Ok(FieldPath::EventPrincipal),
        ("eventResource", true) => Ok(FieldPath::EventResource),
        ("requestId", true) => Ok(FieldPath::RequestId),
        ("sessionId", true) => Ok(FieldPath::SessionId),
        _ => {
            let mut name = head;
            for r in rest {
                name.push('.');
                name.push_str(&r);
            }
            Err(format!(
                "unknown event field `{name}` (fields: input.<name>, output.<name>, eventPrincipal, eventResource, requestId, sessionId)"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Cond {
        parse_condition(text, 0).unwrap_or_else(|e| panic!("{text}: {e:?}"))
    }

    #[test]
    fn parses_formerly_with_correlated_output_field() {
        let c = parse(
            r#"formerly within 1h AgentCore::Action::"FundsTarget___get_account_balance"::response{
                eventResource: resource, output.accountId: context.input.toAccount }"#,
        );
        let Cond::Formerly(Window(ms), body) = c else {
            panic!("formerly")
        };
        assert_eq!(ms, 3_600_000);
        let Cond::Pred(p) = *body else {
            panic!("predicate")
        };
        assert_eq!(p.action_type, "AgentCore::Action");
        assert_eq!(p.action_id, "FundsTarget___get_account_balance");
        assert_eq!(p.kind, EventKind::Response);
        assert_eq!(
            p.fields[1],
            (
                FieldPath::Output(vec!["accountId".to_owned()]),
                Expr::Context(vec!["input".to_owned(), "toAccount".to_owned()])
            )
        );
    }

    #[test]
    fn parses_count_bound_by_exists_with_parenthesised_aggregate() {
        let c = parse(
            r#"exists (n: Long).
                (count for (t: Timepoint).
                    where (formerly within 5m (AgentCore::Action::"T___x"::request{ eventResource: resource } && tp(t)))) == n
                && n > 3"#,
        );
        let Cond::Exists { var, body, .. } = c else {
            panic!("exists")
        };
        assert_eq!(&*var, "n");
        let Cond::And(parts) = *body else {
            panic!("and")
        };
        assert!(matches!(
            &parts[0],
            Cond::Cmp {
                op: CmpOp::Eq,
                left: Expr::Agg(_),
                ..
            }
        ));
        assert!(matches!(&parts[1], Cond::Cmp { op: CmpOp::Gt, .. }));
    }

    #[test]
    fn negation_binds_tighter_than_since() {
        let c = parse(
            r#"!AgentCore::Action::"T___pay"::response{ eventResource: resource }
               since within 1h AgentCore::Action::"T___approve"::response{ eventResource: resource }"#,
        );
        let Cond::Since { left, right, .. } = c else {
            panic!("since")
        };
        assert!(matches!(*left, Cond::Not(_)));
        assert!(matches!(*right, Cond::Pred(_)));
    }

    #[test]
    fn rejects_disjunction_and_unknown_kinds_with_offsets() {
        let e = parse_condition(
            r#"formerly within 1h A::Action::"x"::request{} || formerly within 1h A::Action::"y"::request{}"#,
            100,
        )
        .expect_err("no ||");
        assert!(e.message.contains("`||`"), "{e:?}");
        assert_eq!(e.offset, 100 + 45);
        let e =
            parse_condition(r#"formerly within 1h A::Action::"x"::done{}"#, 0).expect_err("kind");
        assert!(e.message.contains("unknown event kind `done`"), "{e:?}");
    }

    #[test]
    fn rejects_macros_and_unknown_units() {
        let e = parse_condition("count_within(1h, x)", 0).expect_err("macro");
        assert!(e.message.contains("macros"), "{e:?}");
        let e = parse_condition(r#"formerly within 1w A::Action::"x"::request{}"#, 0)
            .expect_err("unit");
        assert!(e.message.contains("unknown time unit `w`"), "{e:?}");
    }

    #[test]
    fn sum_and_arithmetic_parse_as_terms() {
        let c = parse(
            r#"exists (total: Long). (sum amt for (amt: Long), (t: Timepoint).
                 where (formerly within 24h (A::Action::"T___trade"::request{ eventResource: resource, input.amount: amt } && tp(t)))) == total
                 && total + 100 >= 60000 * 2"#,
        );
        let Cond::Exists { body, .. } = c else {
            panic!("exists")
        };
        let Cond::And(parts) = *body else {
            panic!("and")
        };
        let Cond::Cmp {
            left: Expr::Agg(agg),
            ..
        } = &parts[0]
        else {
            panic!("sum")
        };
        assert_eq!(agg.sum_of.as_deref(), Some("amt"));
        assert_eq!(agg.binders.len(), 2);
        assert!(matches!(
            &parts[1],
            Cond::Cmp {
                left: Expr::Arith(ArithOp::Add, _, _),
                right: Expr::Arith(ArithOp::Mul, _, _),
                ..
            }
        ));
    }
}
