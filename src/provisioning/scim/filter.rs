//! SCIM filters (RFC 7644 §3.4.2.2), parsed into a tree and evaluated over a resource's JSON.
//!
//! Pure: no I/O, no HTTP. Grammar (ABNF in RFC 7644 §8, simplified to what clients send):
//!
//! ```text
//! filter     = or
//! or         = and *("or" and)
//! and        = unary *("and" unary)
//! unary      = "not" "(" filter ")" / "(" filter ")" / attrexp / valuepath
//! attrexp    = attrpath "pr" / attrpath compareop compvalue
//! valuepath  = attrpath "[" filter "]"
//! ```
//!
//! Attribute names are case-insensitive (§3.10). String comparisons are case-insensitive except
//! for `id`, `externalId` and `meta.version`, which RFC 7643 marks caseExact. `gt/ge/lt/le` on
//! RFC 3339 values (e.g. `meta.lastModified`) compare instants, not text.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

/// An attribute path: optional schema URN, a name and an optional sub-attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    /// Schema URN prefix (`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`), if given.
    pub urn: Option<String>,
    pub name: String,
    pub sub: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Present(AttrPath),
    Compare(AttrPath, CompareOp, Value),
    /// `emails[type eq "work"]`: true when an element of the multi-valued attribute matches.
    ValuePath(AttrPath, Box<Filter>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter at position {pos}: {message}")]
pub struct FilterError {
    pub pos: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
}

fn lex(input: &str) -> Result<Vec<(usize, Tok)>, FilterError> {
    let chars: Vec<(usize, char)> = input.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((pos, Tok::LParen));
                i += 1
            }
            ')' => {
                out.push((pos, Tok::RParen));
                i += 1
            }
            '[' => {
                out.push((pos, Tok::LBracket));
                i += 1
            }
            ']' => {
                out.push((pos, Tok::RBracket));
                i += 1
            }
            '"' => {
                // A JSON string (RFC 7644: compValue is a JSON string); escapes as in JSON.
                let mut j = i + 1;
                let mut escaped = false;
                while j < chars.len() {
                    let ch = chars[j].1;
                    if escaped {
                        escaped = false;
                    } else if ch == '\\' {
                        escaped = true;
                    } else if ch == '"' {
                        break;
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(FilterError {
                        pos,
                        message: "unterminated string".into(),
                    });
                }
                let end = chars[j].0 + 1;
                let s: String =
                    serde_json::from_str(&input[pos..end]).map_err(|e| FilterError {
                        pos,
                        message: format!("bad string: {e}"),
                    })?;
                out.push((pos, Tok::Str(s)));
                i = j + 1;
            }
            _ => {
                let mut j = i;
                while j < chars.len() {
                    let ch = chars[j].1;
                    if ch.is_whitespace() || matches!(ch, '(' | ')' | '[' | ']' | '"') {
                        break;
                    }
                    j += 1;
                }
                let end = chars.get(j).map(|c| c.0).unwrap_or(input.len());
                out.push((pos, Tok::Word(input[pos..end].to_owned())));
                i = j;
            }
        }
    }
    Ok(out)
}

/// Parses an attribute path such as `userName`, `name.familyName`, `emails.value` or
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value`.
pub fn parse_attr_path(raw: &str) -> Result<AttrPath, String> {
    // The whole extension object, addressed by its schema URN.
    if raw.eq_ignore_ascii_case(super::wire::ENTERPRISE_SCHEMA) {
        return Ok(AttrPath {
            urn: None,
            name: super::wire::ENTERPRISE_SCHEMA.to_owned(),
            sub: None,
        });
    }
    // `get`, not `[..4]`: byte 4 may fall inside a multi-byte character.
    let (urn, rest) =
        if raw.len() > 4 && raw.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:")) {
            match raw.rfind(':') {
                Some(i) if i + 1 < raw.len() => (Some(raw[..i].to_owned()), &raw[i + 1..]),
                _ => return Err(format!("\"{raw}\" is not an attribute path")),
            }
        } else {
            (None, raw)
        };
    let mut parts = rest.splitn(2, '.');
    let name = parts.next().unwrap_or_default();
    let sub = parts.next();
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
    };
    if !valid(name) || sub.is_some_and(|s| !valid(s)) {
        return Err(format!("\"{raw}\" is not an attribute path"));
    }
    Ok(AttrPath {
        urn,
        name: name.to_owned(),
        sub: sub.map(str::to_owned),
    })
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    i: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.1)
    }
    fn pos(&self) -> usize {
        self.toks.get(self.i).map(|t| t.0).unwrap_or(self.end)
    }
    fn err<T>(&self, message: impl Into<String>) -> Result<T, FilterError> {
        Err(FilterError {
            pos: self.pos(),
            message: message.into(),
        })
    }
    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn or(&mut self, depth: usize) -> Result<Filter, FilterError> {
        let mut left = self.and(depth)?;
        while self.keyword("or") {
            self.i += 1;
            let right = self.and(depth)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Filter, FilterError> {
        let mut left = self.unary(depth)?;
        while self.keyword("and") {
            self.i += 1;
            let right = self.unary(depth)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<(), FilterError> {
        if self.peek() == Some(&want) {
            self.i += 1;
            Ok(())
        } else {
            self.err(format!("expected {what}"))
        }
    }

    fn unary(&mut self, depth: usize) -> Result<Filter, FilterError> {
        // Nesting is bounded: a hostile filter must not exhaust the stack.
        if depth > 32 {
            return self.err("filter nested too deeply");
        }
        if self.keyword("not") {
            self.i += 1;
            self.expect(Tok::LParen, "\"(\" after not")?;
            let inner = self.or(depth + 1)?;
            self.expect(Tok::RParen, "\")\"")?;
            return Ok(Filter::Not(Box::new(inner)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.i += 1;
            let inner = self.or(depth + 1)?;
            self.expect(Tok::RParen, "\")\"")?;
            return Ok(inner);
        }
        let Some(Tok::Word(w)) = self.peek().cloned() else {
            return self.err("expected an attribute name");
        };
        let pos = self.pos();
        let mut path = parse_attr_path(&w).map_err(|message| FilterError { pos, message })?;
        self.i += 1;
        if self.peek() == Some(&Tok::LBracket) {
            self.i += 1;
            let inner = self.or(depth + 1)?;
            self.expect(Tok::RBracket, "\"]\"")?;
            // `emails[type eq "work"].value` is not a filter form (only a PATCH path form).
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        let Some(Tok::Word(op)) = self.peek().cloned() else {
            return self.err("expected an operator");
        };
        self.i += 1;
        let op = match op.to_ascii_lowercase().as_str() {
            "pr" => return Ok(Filter::Present(path)),
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            other => return self.err(format!("unknown operator \"{other}\"")),
        };
        let value = match self.peek().cloned() {
            Some(Tok::Str(s)) => Value::String(s),
            Some(Tok::Word(w)) => match w.to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ => match serde_json::from_str::<serde_json::Number>(&w) {
                    Ok(n) => Value::Number(n),
                    Err(_) => return self.err(format!("\"{w}\" is not a value")),
                },
            },
            _ => return self.err("expected a value"),
        };
        self.i += 1;
        // Normalise: a sub-attribute filter on a bare path keeps its shape.
        path.name = path.name.clone();
        Ok(Filter::Compare(path, op, value))
    }
}

/// Parses a filter expression.
pub fn parse(input: &str) -> Result<Filter, FilterError> {
    if input.len() > 4096 {
        return Err(FilterError {
            pos: 0,
            message: "filter longer than 4096 characters".into(),
        });
    }
    let mut p = Parser {
        toks: lex(input)?,
        i: 0,
        end: input.len(),
    };
    if p.toks.is_empty() {
        return p.err("empty filter");
    }
    let f = p.or(0)?;
    if p.i != p.toks.len() {
        return p.err("unexpected text after the filter");
    }
    Ok(f)
}

/// Finds a key of a JSON object case-insensitively.
pub fn get_ci<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    obj.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// The object an attribute path starts from: the resource, or its extension object.
fn base<'a>(resource: &'a Value, path: &AttrPath) -> Option<&'a Value> {
    match &path.urn {
        None => Some(resource),
        Some(urn) => {
            // A core-schema URN prefix means the attribute lives at the top level.
            if urn.eq_ignore_ascii_case(super::wire::USER_SCHEMA)
                || urn.eq_ignore_ascii_case(super::wire::GROUP_SCHEMA)
            {
                Some(resource)
            } else {
                get_ci(resource, urn)
            }
        }
    }
}

/// Every value the path reaches (multi-valued attributes flattened).
pub fn values_at<'a>(resource: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let Some(attr) = base(resource, path).and_then(|b| get_ci(b, &path.name)) else {
        return Vec::new();
    };
    let items: Vec<&Value> = match attr {
        Value::Array(a) => a.iter().collect(),
        v => vec![v],
    };
    match &path.sub {
        None => items
            .into_iter()
            .map(|v| {
                // `emails eq "x"` on a complex multi-valued attribute compares its `value`.
                if v.is_object() {
                    get_ci(v, "value").unwrap_or(v)
                } else {
                    v
                }
            })
            .collect(),
        Some(sub) => items.into_iter().filter_map(|v| get_ci(v, sub)).collect(),
    }
}

fn case_exact(path: &AttrPath) -> bool {
    let n = path.name.to_ascii_lowercase();
    (n == "id" || n == "externalid" || (n == "meta" && path.sub.as_deref() == Some("version")))
        && path.urn.is_none()
}

fn instant(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

fn compare(have: &Value, op: CompareOp, want: &Value, exact: bool) -> bool {
    use std::cmp::Ordering;
    let ordering: Option<Ordering> = match (have, want) {
        (Value::String(a), Value::String(b)) => match (instant(a), instant(b)) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ if exact => Some(a.as_str().cmp(b.as_str())),
            _ => Some(a.to_lowercase().cmp(&b.to_lowercase())),
        },
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    };
    let text = |f: fn(&str, &str) -> bool| match (have, want) {
        (Value::String(a), Value::String(b)) if exact => f(a, b),
        (Value::String(a), Value::String(b)) => f(&a.to_lowercase(), &b.to_lowercase()),
        _ => false,
    };
    match op {
        CompareOp::Eq => ordering == Some(Ordering::Equal),
        CompareOp::Ne => ordering != Some(Ordering::Equal),
        CompareOp::Co => text(|a, b| a.contains(b)),
        CompareOp::Sw => text(|a, b| a.starts_with(b)),
        CompareOp::Ew => text(|a, b| a.ends_with(b)),
        // Booleans have no order (RFC 7644 §3.4.2.2: gt/ge/lt/le on boolean is an error; here false).
        CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le if have.is_boolean() => false,
        CompareOp::Gt => ordering == Some(Ordering::Greater),
        CompareOp::Ge => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
        CompareOp::Lt => ordering == Some(Ordering::Less),
        CompareOp::Le => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
    }
}

fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// Whether `filter` reads something the service adds when it renders a resource: a user's
/// `groups` (`user` true), or `meta.location`. Any other filter can be evaluated on the stored
/// resource, so a list renders only the page it returns.
pub fn reads_rendered(filter: &Filter, user: bool) -> bool {
    let rendered = |p: &AttrPath| {
        (user && p.name.eq_ignore_ascii_case("groups"))
            || (p.name.eq_ignore_ascii_case("meta")
                && p.sub
                    .as_deref()
                    .is_none_or(|s| s.eq_ignore_ascii_case("location")))
    };
    match filter {
        Filter::And(a, b) | Filter::Or(a, b) => reads_rendered(a, user) || reads_rendered(b, user),
        Filter::Not(f) => reads_rendered(f, user),
        Filter::Present(p) | Filter::Compare(p, _, _) => rendered(p),
        // The inner filter reads the elements of `p`, not the resource.
        Filter::ValuePath(p, _) => rendered(p),
    }
}

/// Whether `resource` matches `filter`.
pub fn matches(filter: &Filter, resource: &Value) -> bool {
    match filter {
        Filter::And(a, b) => matches(a, resource) && matches(b, resource),
        Filter::Or(a, b) => matches(a, resource) || matches(b, resource),
        Filter::Not(f) => !matches(f, resource),
        Filter::Present(p) => values_at(resource, p).into_iter().any(present),
        Filter::Compare(p, CompareOp::Ne, v) => {
            // "ne": no value equals (an absent attribute is "not equal").
            !values_at(resource, p)
                .into_iter()
                .any(|have| compare(have, CompareOp::Eq, v, case_exact(p)))
        }
        Filter::Compare(p, op, v) => values_at(resource, p)
            .into_iter()
            .any(|have| compare(have, *op, v, case_exact(p))),
        Filter::ValuePath(p, inner) => {
            let Some(attr) = base(resource, p).and_then(|b| get_ci(b, &p.name)) else {
                return false;
            };
            match attr {
                Value::Array(items) => items.iter().any(|item| matches(inner, item)),
                item @ Value::Object(_) => matches(inner, item),
                _ => false,
            }
        }
    }
}

#[cfg(test)]
mod tests;
