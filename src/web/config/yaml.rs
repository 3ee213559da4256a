//! A YAML tree for the web config that keeps every scalar as written, so values can be read the
//! way exporter-toolkit's YAML library (go-yaml v2) reads them into Go types: a string field takes
//! the scalar's text whatever it looks like (`X-XSS-Protection: 1` is the string `"1"`), a bool
//! field takes YAML 1.1 booleans (`yes`, `on`, ...). yaml-rust2's own tree resolves `1` to an
//! integer and loses how it was written; this one builds the tree from the parser's events.
//!
//! It owns the tree and its loading only (anchors, aliases, duplicate keys, one document); what a
//! value means is `parse`'s business. It reads no files.

use yaml_rust2::Event;
use yaml_rust2::parser::{MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// One node of a YAML document.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    /// `~`, `null`, an empty value, or `!!null`.
    Null,
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Entries in file order.
    Map(Vec<(Node, Node)>),
}

/// A scalar as written.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Scalar {
    /// The text (quotes and escapes already resolved by the parser).
    pub text: String,
    /// Plain (unquoted, untagged): only then may it be read as a bool or a number.
    pub plain: bool,
}

impl Node {
    /// The text of a scalar, `None` for anything else.
    pub fn text(&self) -> Option<&str> {
        match self {
            Node::Scalar(s) => Some(&s.text),
            _ => None,
        }
    }
}

/// Loads `text`: `Ok(Node::Null)` for an empty file; an error for invalid YAML, a duplicate key
/// or more than one document.
pub(super) fn load(text: &str) -> Result<Node, String> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| e.to_string())?;
    if let Some(e) = builder.error {
        return Err(e);
    }
    match builder.docs.len() {
        0 => Ok(Node::Null),
        1 => Ok(builder.docs.pop().unwrap_or(Node::Null)),
        _ => Err("more than one YAML document".into()),
    }
}

/// An open collection while its events arrive.
enum Open {
    Seq(Vec<Node>, usize),
    /// Entries so far, the key waiting for its value, anchor id.
    Map(Vec<(Node, Node)>, Option<Node>, usize),
}

/// Most values a document may hold once aliases are expanded (against alias bombs).
const MAX_NODES: usize = 100_000;

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    docs: Vec<Node>,
    /// Anchor id, the node, and how many values it holds.
    anchors: Vec<(usize, Node, usize)>,
    /// Values so far, aliases expanded.
    nodes: usize,
    error: Option<String>,
}

/// How many values `node` holds, itself included.
fn size(node: &Node) -> usize {
    match node {
        Node::Null | Node::Scalar(_) => 1,
        Node::Seq(items) => items.iter().map(size).fold(1, usize::saturating_add),
        Node::Map(entries) => entries
            .iter()
            .map(|(k, v)| size(k).saturating_add(size(v)))
            .fold(1, usize::saturating_add),
    }
}

impl Builder {
    fn fail(&mut self, mark: Marker, message: String) {
        if self.error.is_none() {
            self.error = Some(format!(
                "line {} column {}: {message}",
                mark.line(),
                mark.col() + 1
            ));
        }
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor > 0 {
            self.anchors.retain(|(a, _, _)| *a != anchor);
            self.anchors.push((anchor, node.clone(), size(node)));
        }
    }

    /// Counts `n` more values; false (and an error) past [`MAX_NODES`].
    fn count(&mut self, n: usize, mark: Marker) -> bool {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            self.fail(
                mark,
                format!("more than {MAX_NODES} values (aliases expanded)"),
            );
            return false;
        }
        true
    }

    fn add(&mut self, node: Node, mark: Marker) {
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Open::Seq(items, _)) => items.push(node),
            Some(Open::Map(entries, pending, _)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    if entries.iter().any(|(k, _)| *k == key) {
                        let name = key.text().unwrap_or("(a collection)").to_string();
                        self.fail(mark, format!("duplicate key {name:?}"));
                        return;
                    }
                    entries.push((key, node));
                }
            },
        }
    }
}

/// go-yaml's reading of an untagged plain scalar as null.
fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn scalar(text: String, style: TScalarStyle, tag: Option<Tag>) -> Node {
    let core = tag
        .as_ref()
        .filter(|t| t.handle == "tag:yaml.org,2002:" || t.handle == "!!")
        .map(|t| t.suffix.as_str());
    match (style, core, &tag) {
        (_, Some("null"), _) => Node::Null,
        (TScalarStyle::Plain, None, None) if is_null(&text) => Node::Null,
        // An explicit `!!str` (or any tag) makes it a string, never a bool or number.
        (TScalarStyle::Plain, None, None) => Node::Scalar(Scalar { text, plain: true }),
        (TScalarStyle::Plain, Some("bool" | "int" | "float"), _) => {
            Node::Scalar(Scalar { text, plain: true })
        }
        _ => Node::Scalar(Scalar { text, plain: false }),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::SequenceStart(anchor, _) => self.stack.push(Open::Seq(Vec::new(), anchor)),
            Event::MappingStart(anchor, _) => self.stack.push(Open::Map(Vec::new(), None, anchor)),
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Open::Seq(items, anchor)) => (Node::Seq(items), anchor),
                    Some(Open::Map(entries, _, anchor)) => (Node::Map(entries), anchor),
                    None => return,
                };
                self.remember(anchor, &node);
                self.add(node, mark);
            }
            Event::Scalar(text, style, anchor, tag) => {
                if !self.count(1, mark) {
                    return;
                }
                let node = scalar(text, style, tag);
                self.remember(anchor, &node);
                self.add(node, mark);
            }
            Event::Alias(anchor) => {
                match self.anchors.iter().find(|(a, _, _)| *a == anchor) {
                    Some((_, node, n)) => {
                        let (node, n) = (node.clone(), *n);
                        if self.count(n, mark) {
                            self.add(node, mark);
                        }
                    }
                    None => self.fail(mark, "alias to an unknown anchor".into()),
                };
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(t: &str) -> Node {
        Node::Scalar(Scalar {
            text: t.into(),
            plain: true,
        })
    }

    fn quoted(t: &str) -> Node {
        Node::Scalar(Scalar {
            text: t.into(),
            plain: false,
        })
    }

    #[test]
    fn scalars_keep_their_text() {
        let doc = load("a: 1\nb: 0x1F\nc: '1'\nd: 1.50\ne: yes\nf: ~\ng:\nh: !!str true\n")
            .expect("loads");
        assert_eq!(
            doc,
            Node::Map(vec![
                (plain("a"), plain("1")),
                (plain("b"), plain("0x1F")),
                (plain("c"), quoted("1")),
                (plain("d"), plain("1.50")),
                (plain("e"), plain("yes")),
                (plain("f"), Node::Null),
                (plain("g"), Node::Null),
                (plain("h"), quoted("true")),
            ])
        );
    }

    #[test]
    fn anchors_lists_and_errors() {
        let doc = load("x: &v [a, 'b']\ny: *v\n").expect("loads");
        let list = Node::Seq(vec![plain("a"), quoted("b")]);
        assert_eq!(
            doc,
            Node::Map(vec![(plain("x"), list.clone()), (plain("y"), list)])
        );
        assert_eq!(load("").expect("empty"), Node::Null);
        assert_eq!(load("# only a comment\n").expect("comment"), Node::Null);
        let e = load("a: 1\na: 2\n").expect_err("duplicate");
        assert!(e.contains("duplicate key \"a\""), "{e}");
        assert!(load("a: 1\n---\nb: 2\n").is_err());
        // An alias bomb stops at the node limit instead of eating memory.
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("b{}", i - 1)
            };
            let refs = vec![format!("*{prev}"); 10].join(", ");
            bomb.push_str(&format!("b{i}: &b{i} [{refs}]\n"));
        }
        let e = load(&bomb).expect_err("alias bomb");
        assert!(e.contains("more than 100000 values"), "{e}");
        assert!(load("a: [\n").is_err());
    }
}
