//! A strict reader of small YAML files (the exporter-toolkit web configuration): a tree of
//! scalars, sequences and mappings, each with its line and column, and typed accessors that
//! report a wrong type, an unknown key or a duplicate key with its key path and place, the way
//! `deny_unknown_fields` does for the TOML file.
//!
//! yaml-rust2 parses; its event stream is kept with the marks, which its `Yaml` values lose.
//! Anchors and aliases are refused: a web configuration has no use for them, and an alias would
//! make one value answer to two key paths.

use std::collections::BTreeMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::error::{key, quoted, Problem};

/// One value of the document and where it starts (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar; `plain` when written without quotes (only a plain `null`, `~` or nothing is
    /// null, only a plain `true` is a boolean).
    Scalar {
        text: String,
        plain: bool,
    },
    Sequence(Vec<Node>),
    Mapping(Vec<(Node, Node)>),
}

/// The first document of `source`; `None` when it holds none (an empty file). Syntax errors
/// carry their line and column.
pub fn parse(source: &str) -> Result<Option<Node>, Problem> {
    let mut events = Events::default();
    Parser::new_from_str(source)
        .load(&mut events, false)
        .map_err(|e| Problem::new("", &format!("YAML syntax: {}", e.info()), Some(place(e.marker()))))?;
    let mut events = events.0.into_iter().peekable();
    while events.next_if(|(e, _)| matches!(e, Event::StreamStart | Event::DocumentStart)).is_some() {}
    if events.peek().is_none_or(|(e, _)| matches!(e, Event::StreamEnd | Event::DocumentEnd)) {
        return Ok(None);
    }
    node(&mut events, 0).map(Some)
}

#[derive(Default)]
struct Events(Vec<(Event, Marker)>);

impl MarkedEventReceiver for Events {
    fn on_event(&mut self, event: Event, mark: Marker) {
        self.0.push((event, mark));
    }
}

fn place(mark: &Marker) -> (usize, usize) {
    // yaml-rust2's lines count from 1, its columns from 0.
    (mark.line(), mark.col() + 1)
}

type Stream = std::iter::Peekable<std::vec::IntoIter<(Event, Marker)>>;

/// Sequences and mappings nest at most this deep: the tree is built by recursion, and a web
/// configuration needs four levels.
const MAX_DEPTH: usize = 32;

fn node(events: &mut Stream, depth: usize) -> Result<Node, Problem> {
    let Some((event, mark)) = events.next() else {
        return Err(Problem::new("", "YAML ends in the middle of a value", None));
    };
    let (mut line, mut col) = place(&mark);
    if depth > MAX_DEPTH {
        return Err(Problem::new(
            "",
            &format!("YAML nested more than {MAX_DEPTH} levels deep"),
            Some((line, col)),
        ));
    }
    let value = match event {
        Event::Scalar(text, style, _, _) => Value::Scalar { text, plain: style == TScalarStyle::Plain },
        Event::SequenceStart(..) => {
            let mut items = Vec::new();
            loop {
                match node_or_end(events, depth + 1)? {
                    Some(item) => items.push(item),
                    None => break Value::Sequence(items),
                }
            }
        }
        Event::MappingStart(..) => {
            let mut entries: Vec<(Node, Node)> = Vec::new();
            loop {
                let Some(k) = node_or_end(events, depth + 1)? else {
                    // A block mapping's own mark is past its first key: it starts at that key.
                    if let Some((first, _)) = entries.first() {
                        (line, col) = (first.line, first.col);
                    }
                    break Value::Mapping(entries);
                };
                entries.push((k, node(events, depth + 1)?));
            }
        }
        Event::Alias(_) => {
            return Err(Problem::new(
                "",
                "YAML aliases (*name) are not supported: write the value out",
                Some((line, col)),
            ))
        }
        _ => return Err(Problem::new("", "unexpected YAML structure", Some((line, col)))),
    };
    Ok(Node { value, line, col })
}

/// The next node, or `None` at the end of the enclosing sequence or mapping.
fn node_or_end(events: &mut Stream, depth: usize) -> Result<Option<Node>, Problem> {
    if events.next_if(|(e, _)| matches!(e, Event::SequenceEnd | Event::MappingEnd)).is_some() {
        return Ok(None);
    }
    node(events, depth).map(Some)
}

impl Node {
    fn at(&self) -> Option<(usize, usize)> {
        Some((self.line, self.col))
    }

    /// A problem with this value.
    pub fn problem(&self, path: &str, message: &str) -> Problem {
        Problem::new(path, message, self.at())
    }

    /// Whether the value is YAML's null (`null`, `~` or nothing), which counts as absent.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The entries of a mapping by key. Each key must be one of `known`; an unknown or repeated
    /// key, a key that is not a string, or a value that is not a mapping, is a problem.
    pub fn mapping<'a>(
        &'a self,
        p: &mut Vec<Problem>,
        path: &str,
        known: &[&str],
    ) -> BTreeMap<&'a str, &'a Node> {
        let mut out = BTreeMap::new();
        if self.is_null() {
            return out;
        }
        let Value::Mapping(entries) = &self.value else {
            p.push(self.problem(path, "expected a mapping (key: value lines)"));
            return out;
        };
        for (k, v) in entries {
            let Value::Scalar { text, .. } = &k.value else {
                p.push(k.problem(path, "a key must be a string"));
                continue;
            };
            let here = join(path, text);
            if !known.is_empty() && !known.contains(&text.as_str()) {
                p.push(k.problem(&here, &format!("unknown key, expected one of {}", known.join(", "))));
            } else if let Some(first) = out.get(text.as_str()) {
                p.push(k.problem(
                    &here,
                    &format!("duplicate key (its value was given at line {} already)", first.line),
                ));
            } else {
                out.insert(text.as_str(), v);
            }
        }
        out
    }

    /// The value as a string; a sequence or mapping is a problem.
    pub fn string(&self, p: &mut Vec<Problem>, path: &str) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => {
                p.push(self.problem(path, "expected a string"));
                None
            }
        }
    }

    /// `true` or `false`, as YAML 1.2 spells them.
    pub fn boolean(&self, p: &mut Vec<Problem>, path: &str) -> Option<bool> {
        match &self.value {
            Value::Scalar { text, plain: true } if matches!(text.as_str(), "true" | "True" | "TRUE") => {
                Some(true)
            }
            Value::Scalar { text, plain: true } if matches!(text.as_str(), "false" | "False" | "FALSE") => {
                Some(false)
            }
            Value::Scalar { text, .. } => {
                p.push(self.problem(path, &format!("{} is not a boolean (true or false)", quoted(text))));
                None
            }
            _ => {
                p.push(self.problem(path, "expected true or false"));
                None
            }
        }
    }

    /// The items of a sequence; null is empty.
    pub fn sequence(&self, p: &mut Vec<Problem>, path: &str) -> &[Node] {
        match &self.value {
            Value::Sequence(items) => items,
            _ if self.is_null() => &[],
            _ => {
                p.push(self.problem(path, "expected a list (- item lines, or [a, b])"));
                &[]
            }
        }
    }
}

/// `path.key`, the key quoted when it is not a bare word.
pub fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        key(k)
    } else {
        format!("{path}.{}", key(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(text: &str, plain: bool, line: usize, col: usize) -> Node {
        Node { value: Value::Scalar { text: text.into(), plain }, line, col }
    }

    #[test]
    fn values_keep_their_lines_and_columns() {
        let doc = parse("a:\n  b: \"x\"\n  c: [1, 2]\n").unwrap().unwrap();
        let Value::Mapping(top) = &doc.value else { panic!("{doc:?}") };
        assert_eq!(top[0].0, scalar("a", true, 1, 1));
        let Value::Mapping(inner) = &top[0].1.value else { panic!("{doc:?}") };
        assert_eq!(inner[0], (scalar("b", true, 2, 3), scalar("x", false, 2, 6)));
        assert_eq!(
            inner[1].1.value,
            Value::Sequence(vec![scalar("1", true, 3, 7), scalar("2", true, 3, 10)])
        );
    }

    #[test]
    fn empty_documents_are_none_and_syntax_errors_have_a_place() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# only a comment\n").unwrap(), None);
        assert_eq!(parse("---\n").unwrap().map(|n| n.is_null()), Some(true));
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.message.starts_with("YAML syntax: "), "{e:?}");
        assert!(e.location.is_some(), "{e:?}");
        let alias = parse("a: &x 1\nb: *x\n").unwrap_err();
        assert_eq!(alias.location, Some((2, 4)), "{alias:?}");
        let deep = parse(&format!("{}1{}", "[".repeat(100), "]".repeat(100))).unwrap_err();
        assert_eq!(deep.message, "YAML nested more than 32 levels deep");
        assert!(parse(&format!("{}1{}", "[".repeat(30), "]".repeat(30))).is_ok());
        let block: String = (0..40).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
        assert_eq!(parse(&block).unwrap_err().message, "YAML nested more than 32 levels deep");
    }

    #[test]
    fn mappings_report_unknown_duplicate_and_mistyped_keys() {
        let doc = parse("a: 1\nzz: 2\na: 3\n").unwrap().unwrap();
        let mut p = Vec::new();
        let known = doc.mapping(&mut p, "top", &["a", "b"]);
        assert_eq!(known.len(), 1);
        let messages: Vec<String> =
            p.iter().map(|p| format!("{:?} {}: {}", p.location, p.path, p.message)).collect();
        assert_eq!(
            messages,
            [
                "Some((2, 1)) top.zz: unknown key, expected one of a, b",
                "Some((3, 1)) top.a: duplicate key (its value was given at line 1 already)",
            ]
        );
        let mut p = Vec::new();
        parse("- 1\n").unwrap().unwrap().mapping(&mut p, "top", &[]);
        assert_eq!(p[0].message, "expected a mapping (key: value lines)");
    }

    #[test]
    fn booleans_are_plain_true_or_false() {
        let mut p = Vec::new();
        for (text, expected) in
            [("true", Some(true)), ("False", Some(false)), ("\"true\"", None), ("yes", None)]
        {
            let node = parse(text).unwrap().unwrap();
            assert_eq!(node.boolean(&mut p, "x"), expected, "{text}");
        }
        assert_eq!(p.len(), 2, "{p:?}");
    }
}
