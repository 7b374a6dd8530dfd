//! Policy files with temporal blocks -> plain Cedar plus the conditions.
//!
//! Each `when temporal { φ }` / `unless temporal { φ }` clause is parsed into a typed
//! condition and replaced by a plain Cedar clause that reads the condition's value from the
//! request context: `when { if context has temporal && context.temporal has c3 then
//! context.temporal.c3 else <D> }`. The default `<D>` makes a missing value fail closed: a
//! permit does not apply and a forbid does. Everything else of the file reaches Cedar as it
//! was written; the replacement keeps the block's line breaks, so that lines after it keep
//! their numbers, and [`OffsetMap`] maps Cedar's error offsets back to the original text.

use super::ast::Cond;
use super::check::{self, MAX_OPERATORS_PER_POLICY};
use super::parse::parse_condition;

/// Whether a clause is `when` or `unless`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clause {
    /// `when temporal { ... }`: the policy applies only if the condition holds.
    When,
    /// `unless temporal { ... }`: the policy applies only if it does not.
    Unless,
}

/// The effect of the policy a clause belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// `permit`.
    Permit,
    /// `forbid`.
    Forbid,
}

/// One temporal clause found in a source.
#[derive(Debug, Clone)]
pub struct FoundCondition {
    /// The statement (policy) index within its source.
    pub statement: usize,
    /// `when` or `unless`.
    pub clause: Clause,
    /// The policy's effect.
    pub effect: Effect,
    /// The condition.
    pub cond: Cond,
    /// Byte offset of the clause in the original text.
    pub offset: usize,
    /// The condition's text as written.
    pub text: String,
}

/// A source rewritten to plain Cedar.
#[derive(Debug, Clone)]
pub struct Rewritten {
    /// The plain Cedar text.
    pub text: String,
    /// Its temporal clauses, in order; the `n`-th found gets id `first_id + n`.
    pub conditions: Vec<FoundCondition>,
    /// How many policy statements the source has.
    pub statements: usize,
    /// Maps offsets of `text` back to the original.
    pub offsets: OffsetMap,
}

/// An error in a source, at a byte offset of the original text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    /// Byte offset in the original text.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// Replaced ranges: `(original start, original end, rewritten start, rewritten end)`.
#[derive(Debug, Clone, Default)]
pub struct OffsetMap(Vec<(usize, usize, usize, usize)>);

impl OffsetMap {
    /// The original offset of an offset of the rewritten text (inside a replacement: the
    /// replaced clause's start).
    #[must_use]
    pub fn original(&self, rewritten: usize) -> usize {
        let mut shift: isize = 0;
        for &(os, oe, ns, ne) in &self.0 {
            if rewritten < ns {
                break;
            }
            if rewritten < ne {
                return os;
            }
            shift = oe.cast_signed() - ne.cast_signed();
        }
        rewritten.saturating_add_signed(shift)
    }
}

/// The name of condition `id` in the request context (`context.temporal.c<id>`).
#[must_use]
pub fn context_name(id: usize) -> String {
    format!("c{id}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lexeme {
    Word,
    Other,
}

/// A minimal Cedar scanner: words, strings and comments skipped correctly, so that a
/// `temporal` inside a string or comment is never taken for a clause.
struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn skip_trivia(&mut self) {
        let b = self.text.as_bytes();
        loop {
            while self.pos < b.len() && b[self.pos].is_ascii_whitespace() {
                self.pos += 1;
            }
            if self.text[self.pos..].starts_with("//") {
                while self.pos < b.len() && b[self.pos] != b'\n' {
                    self.pos += 1;
                }
                continue;
            }
            break;
        }
    }

    /// The next lexeme: `(start, end, kind)`, `None` at the end. Strings are one `Other`.
    fn next(&mut self) -> Option<(usize, usize, Lexeme)> {
        self.skip_trivia();
        let b = self.text.as_bytes();
        let start = self.pos;
        let c = *b.get(start)?;
        if c.is_ascii_alphabetic() || c == b'_' {
            while self.pos < b.len() && (b[self.pos].is_ascii_alphanumeric() || b[self.pos] == b'_')
            {
                self.pos += 1;
            }
            return Some((start, self.pos, Lexeme::Word));
        }
        if c == b'"' {
            self.pos += 1;
            while self.pos < b.len() {
                match b[self.pos] {
                    b'\\' => self.pos += 2,
                    b'"' => {
                        self.pos += 1;
                        break;
                    }
                    _ => self.pos += 1,
                }
            }
            self.pos = self.pos.min(b.len());
            return Some((start, self.pos, Lexeme::Other));
        }
        self.pos += self.text[start..].chars().next().map_or(1, char::len_utf8);
        Some((start, self.pos, Lexeme::Other))
    }

    fn word(&self, (s, e, k): (usize, usize, Lexeme)) -> Option<&'a str> {
        (k == Lexeme::Word).then(|| &self.text[s..e])
    }
}

/// Rewrites one source. Condition ids start at `first_id`.
///
/// # Errors
/// Every syntax and rule error of its temporal clauses.
pub fn rewrite(text: &str, first_id: usize) -> Result<Rewritten, Vec<SourceError>> {
    let mut scanner = Scanner { text, pos: 0 };
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut offsets = OffsetMap::default();
    let mut conditions = Vec::new();
    let mut errors = Vec::new();
    let mut statement = 0;
    let mut depth: usize = 0;
    let mut effect: Option<Effect> = None;
    let mut after_at = false;
    let mut prev_word: Option<(usize, &str)> = None;
    let mut statement_ops = 0;
    let mut statement_start = 0;
    let mut any_lexeme = false;
    while let Some(lex) = scanner.next() {
        any_lexeme = true;
        let (start, end, _) = lex;
        let word = scanner.word(lex);
        match (word, &text[start..end]) {
            (Some(w), _) => {
                if depth == 0 && effect.is_none() && !after_at {
                    effect = match w {
                        "permit" => Some(Effect::Permit),
                        "forbid" => Some(Effect::Forbid),
                        _ => None,
                    };
                }
                if w == "temporal"
                    && depth == 0
                    && let Some((clause_start, kw)) =
                        prev_word.filter(|(_, k)| *k == "when" || *k == "unless")
                {
                    let clause = if kw == "when" {
                        Clause::When
                    } else {
                        Clause::Unless
                    };
                    match temporal_block(text, end) {
                        Ok((body_start, body_end, block_end)) => {
                            let body = &text[body_start..body_end];
                            let id = first_id + conditions.len();
                            let eff = effect.unwrap_or(Effect::Permit);
                            match parse_condition(body, body_start) {
                                Ok(cond) => {
                                    statement_ops += cond.operator_count();
                                    errors.extend(
                                        check::check(&cond, clause_start).into_iter().map(|e| {
                                            SourceError {
                                                offset: e.offset,
                                                message: e.message,
                                            }
                                        }),
                                    );
                                    conditions.push(FoundCondition {
                                        statement,
                                        clause,
                                        effect: eff,
                                        cond,
                                        offset: clause_start,
                                        text: body.trim().to_owned(),
                                    });
                                }
                                Err(e) => errors.push(SourceError {
                                    offset: e.offset,
                                    message: e.message,
                                }),
                            }
                            let replacement =
                                replacement(kw, id, eff, clause, &text[clause_start..block_end]);
                            out.push_str(&text[copied..clause_start]);
                            let new_start = out.len();
                            out.push_str(&replacement);
                            offsets
                                .0
                                .push((clause_start, block_end, new_start, out.len()));
                            copied = block_end;
                            scanner.pos = block_end;
                            prev_word = None;
                            continue;
                        }
                        Err(e) => {
                            errors.push(e);
                            break;
                        }
                    }
                }
                prev_word = Some((start, w));
                after_at = false;
            }
            (None, "@") => {
                after_at = true;
                prev_word = None;
            }
            (None, "(" | "{" | "[") => {
                depth += 1;
                prev_word = None;
                after_at = false;
            }
            (None, ")" | "}" | "]") => {
                depth = depth.saturating_sub(1);
                prev_word = None;
            }
            (None, ";") if depth == 0 => {
                if statement_ops > MAX_OPERATORS_PER_POLICY {
                    errors.push(SourceError {
                        offset: statement_start,
                        message: format!(
                            "the policy uses {statement_ops} temporal operators; at most {MAX_OPERATORS_PER_POLICY} are allowed per policy"
                        ),
                    });
                }
                statement += 1;
                statement_ops = 0;
                effect = None;
                prev_word = None;
                any_lexeme = false;
                statement_start = end;
            }
            _ => {
                prev_word = None;
            }
        }
    }
    if any_lexeme {
        // A trailing statement without `;`: Cedar reports it.
        statement += 1;
    }
    out.push_str(&text[copied..]);
    if errors.is_empty() {
        Ok(Rewritten {
            text: out,
            conditions,
            statements: statement,
            offsets,
        })
    } else {
        errors.sort_by_key(|e| e.offset);
        Err(errors)
    }
}

/// Finds `{ body }` after `temporal` (at `from`): `(body start, body end, block end)`.
fn temporal_block(text: &str, from: usize) -> Result<(usize, usize, usize), SourceError> {
    let mut s = Scanner { text, pos: from };
    match s.next() {
        Some((open, _, Lexeme::Other)) if &text[open..=open] == "{" => {
            let mut depth = 1;
            while let Some((start, end, _)) = s.next() {
                match &text[start..end] {
                    "{" => depth += 1,
                    "}" => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok((open + 1, start, end));
                        }
                    }
                    _ => {}
                }
            }
            Err(SourceError {
                offset: open,
                message: "unclosed `temporal {` block".to_owned(),
            })
        }
        _ => Err(SourceError {
            offset: from,
            message: "expected `{` after `temporal`".to_owned(),
        }),
    }
}

fn replacement(kw: &str, id: usize, effect: Effect, clause: Clause, original: &str) -> String {
    // A missing value must never let a call through: a permit then does not apply, a
    // forbid does.
    let applies_without_value = effect == Effect::Forbid;
    let default = match clause {
        Clause::When => applies_without_value,
        Clause::Unless => !applies_without_value,
    };
    let name = context_name(id);
    let mut r = format!(
        "{kw} {{ if context has temporal && context.temporal has {name} then context.temporal.{name} else {default} }}"
    );
    for _ in 0..original.matches('\n').count() {
        r.push('\n');
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_temporal_clauses_and_keeps_the_rest() {
        let text = "// temporal { in a comment }\n@id(\"p\")\npermit (principal, action == AgentCore::Action::\"T___pay\", resource)\nwhen temporal {\n  formerly within 1h AgentCore::Action::\"T___approve\"::response{ eventResource: resource }\n}\nwhen { context.input.amount < 10 };\nforbid (principal, action, resource) unless temporal { formerly within 1m AgentCore::Action::\"T___x\"::request{ eventResource: resource, input.s: \"temporal {\" } };";
        let r = rewrite(text, 4).expect("rewrites");
        assert_eq!(r.statements, 2);
        assert_eq!(r.conditions.len(), 2);
        assert_eq!(r.conditions[0].statement, 0);
        assert_eq!(r.conditions[0].effect, Effect::Permit);
        assert_eq!(r.conditions[1].statement, 1);
        assert_eq!(r.conditions[1].clause, Clause::Unless);
        assert!(r.text.contains("when { if context has temporal && context.temporal has c4 then context.temporal.c4 else false }\n\n\nwhen { context.input.amount < 10 };"), "{}", r.text);
        assert!(r.text.contains("unless { if context has temporal && context.temporal has c5 then context.temporal.c5 else false }"), "{}", r.text);
        assert!(
            r.text
                .starts_with("// temporal { in a comment }\n@id(\"p\")")
        );
        assert_eq!(r.text.lines().count(), text.lines().count());
        <cedar_policy::PolicySet as std::str::FromStr>::from_str(&r.text).expect("plain cedar");
    }

    #[test]
    fn missing_values_fail_closed_for_each_effect_and_clause() {
        let r = rewrite(
            "permit(principal, action, resource) unless temporal { formerly within 1m AgentCore::Action::\"a\"::request{ eventResource: resource } };\n\
             forbid(principal, action, resource) when temporal { formerly within 1m AgentCore::Action::\"a\"::request{ eventResource: resource } };",
            0,
        )
        .expect("rewrites");
        assert!(r.text.contains("c0 else true"), "{}", r.text);
        assert!(r.text.contains("c1 else true"), "{}", r.text);
    }

    #[test]
    fn maps_offsets_after_a_replacement_back_to_the_original() {
        let text = "permit(principal, action, resource) when temporal { formerly within 1m AgentCore::Action::\"a\"::request{ eventResource: resource } } when { x };";
        let r = rewrite(text, 0).expect("rewrites");
        let new_x = r.text.rfind('x').expect("x");
        assert_eq!(r.offsets.original(new_x), text.rfind('x').expect("x"));
        let inside = r.text.find("context.temporal").expect("inside");
        assert_eq!(
            r.offsets.original(inside),
            text.find("when temporal").expect("clause")
        );
    }

    #[test]
    fn errors_point_into_the_temporal_block() {
        let text = "permit(principal, action, resource)\nwhen temporal {\n  formerly within 1h AgentCore::Action::\"a\"::request{ input.x: 1 }\n};";
        let e = rewrite(text, 0).expect_err("no eventResource");
        assert_eq!(e.len(), 1);
        assert_eq!(&text[e[0].offset..e[0].offset + 9], "AgentCore");
    }

    #[test]
    fn counts_operators_per_policy() {
        let p = "formerly within 1m AgentCore::Action::\"a\"::request{ eventResource: resource }";
        let text = format!(
            "permit(principal, action, resource) when temporal {{ {p} && {p} }} when temporal {{ {p} && {p} }};"
        );
        let e = rewrite(&text, 0).expect_err("four operators");
        assert!(e[0].message.contains("uses 4 temporal operators"), "{e:?}");
    }
}
