//! Diagnostics with file:line, and the index that finds the line of any key path.

use std::fmt;

use toml_edit::{ImDocument, Item};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub message: String,
}

/// All problems of one file, rendered `FILE:LINE: message`, one per line.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub file: String,
    pub items: Vec<Diagnostic>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            writeln!(f, "{}:{}: {}", self.file, d.line, d.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// A segment of a key path: `idp[1].claims.email` is `[Key(idp), Index(1), Key(claims), Key(email)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

pub fn key(k: &str) -> Seg {
    Seg::Key(k.to_owned())
}

/// Renders a path the way a TOML reader thinks of it: `idp[1].claims.email`.
pub fn render_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Finds the 1-based line of a key path in the original text.
pub struct LineIndex<'a> {
    text: &'a str,
    doc: Option<ImDocument<&'a str>>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        LineIndex {
            text,
            doc: ImDocument::parse(text).ok(),
        }
    }

    pub fn line_of_offset(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// The line of the deepest part of `path` that exists: the key itself when present, else its
    /// table. Line 1 when nothing matches.
    pub fn line_of(&self, path: &[Seg]) -> usize {
        use toml_edit::{Table, Value};
        enum Node<'d> {
            Table(&'d Table),
            Inline(&'d toml_edit::InlineTable),
            Tables(&'d toml_edit::ArrayOfTables),
            Array(&'d toml_edit::Array),
            Leaf,
        }
        fn node(item: &Item) -> Node<'_> {
            match item {
                Item::Table(t) => Node::Table(t),
                Item::ArrayOfTables(a) => Node::Tables(a),
                Item::Value(Value::InlineTable(t)) => Node::Inline(t),
                Item::Value(Value::Array(a)) => Node::Array(a),
                _ => Node::Leaf,
            }
        }
        fn value_node(v: &Value) -> Node<'_> {
            match v {
                Value::InlineTable(t) => Node::Inline(t),
                Value::Array(a) => Node::Array(a),
                _ => Node::Leaf,
            }
        }
        let Some(doc) = &self.doc else { return 1 };
        let mut best = 1;
        let mut at = Node::Table(doc.as_table());
        for seg in path {
            let (span, next) = match (seg, at) {
                (Seg::Key(k), Node::Table(t)) => match t.get_key_value(k) {
                    Some((key, item)) => (key.span(), node(item)),
                    None => break,
                },
                (Seg::Key(k), Node::Inline(t)) => match t.get_key_value(k) {
                    Some((key, item)) => (key.span(), node(item)),
                    None => break,
                },
                (Seg::Index(i), Node::Tables(a)) => match a.get(*i) {
                    Some(t) => (t.span(), Node::Table(t)),
                    None => break,
                },
                (Seg::Index(i), Node::Array(a)) => match a.get(*i) {
                    Some(v) => (v.span(), value_node(v)),
                    None => break,
                },
                _ => break,
            };
            if let Some(span) = span {
                best = self.line_of_offset(span.start);
            }
            at = next;
        }
        best
    }
}
