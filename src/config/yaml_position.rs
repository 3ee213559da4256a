//! Where a key stands in a YAML config file, so that an unknown key in YAML is reported with its
//! line and column as it is for TOML (docs/architecture.md, "Configuration": unknown keys are named with their position).
//!
//! It only reads the text and answers a position; it validates nothing and never fails loudly:
//! text it cannot parse simply has no position to offer.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Line and column (both from 1) of the mapping key `field` inside the mapping at `parent`, a
/// path written as the `config` crate writes it in its errors: `""` for the top level, `poll`,
/// `projects[0]`, `projects[0].auth`.
pub fn key_position(text: &str, parent: &str, field: &str) -> Option<(usize, usize)> {
    let mut finder = Finder {
        parent,
        field,
        frames: Vec::new(),
        found: None,
    };
    // A parse error ends the walk; what was found before it still counts.
    let _ = Parser::new_from_str(text).load(&mut finder, false);
    finder.found
}

enum Frame {
    /// `segment` is where this container hangs in its parent (`None` for the document root).
    Map {
        segment: Option<String>,
        key: Option<String>,
        expecting_key: bool,
    },
    Seq {
        segment: Option<String>,
        index: usize,
    },
}

struct Finder<'a> {
    parent: &'a str,
    field: &'a str,
    frames: Vec<Frame>,
    found: Option<(usize, usize)>,
}

impl Finder<'_> {
    /// The path of the innermost open container.
    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.frames {
            let segment = match frame {
                Frame::Map { segment, .. } | Frame::Seq { segment, .. } => segment,
            };
            match segment.as_deref() {
                Some(s) if s.starts_with('[') || path.is_empty() => path.push_str(s),
                Some(s) => {
                    path.push('.');
                    path.push_str(s);
                }
                None => {}
            }
        }
        path
    }

    /// Where a value starting now hangs in the innermost container.
    fn segment_for_value(&self) -> Option<String> {
        match self.frames.last()? {
            Frame::Map { key, .. } => key.clone(),
            Frame::Seq { index, .. } => Some(format!("[{index}]")),
        }
    }

    /// A value (scalar, alias or whole container) just ended in the innermost container.
    fn value_done(&mut self) {
        match self.frames.last_mut() {
            Some(Frame::Map { expecting_key, .. }) => *expecting_key = true,
            Some(Frame::Seq { index, .. }) => *index += 1,
            None => {}
        }
    }
}

impl MarkedEventReceiver for Finder<'_> {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::MappingStart(..) => {
                let segment = self.segment_for_value();
                self.frames.push(Frame::Map {
                    segment,
                    key: None,
                    expecting_key: true,
                });
            }
            Event::SequenceStart(..) => {
                let segment = self.segment_for_value();
                self.frames.push(Frame::Seq { segment, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.frames.pop();
                self.value_done();
            }
            Event::Scalar(value, ..) => {
                let is_key = matches!(
                    self.frames.last(),
                    Some(Frame::Map {
                        expecting_key: true,
                        ..
                    })
                );
                if !is_key {
                    self.value_done();
                    return;
                }
                if self.found.is_none() && value == self.field && self.path() == self.parent {
                    self.found = Some((mark.line(), mark.col() + 1));
                }
                if let Some(Frame::Map {
                    key, expecting_key, ..
                }) = self.frames.last_mut()
                {
                    *key = Some(value);
                    *expecting_key = false;
                }
            }
            Event::Alias(_) => self.value_done(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
poll:
  interval: 60s
  intervall: 30s
projects:
  - project_id: a
    queues: [etl, adhoc]
    colour: blue
  - project_id: b
    queues:
      - x
    auth:
      kind: aksk
      colour: red
colour: green
";

    #[test]
    fn finds_keys_at_every_depth() {
        assert_eq!(key_position(TEXT, "poll", "intervall"), Some((3, 3)));
        assert_eq!(key_position(TEXT, "projects[0]", "colour"), Some((7, 5)));
        assert_eq!(
            key_position(TEXT, "projects[1].auth", "colour"),
            Some((13, 7))
        );
        assert_eq!(key_position(TEXT, "", "colour"), Some((14, 1)));
    }

    #[test]
    fn answers_nothing_for_keys_that_are_not_there_or_unparsable_text() {
        assert_eq!(key_position(TEXT, "poll", "colour"), None);
        assert_eq!(key_position(TEXT, "projects[2]", "colour"), None);
        assert_eq!(key_position("poll: [unclosed", "poll", "x"), None);
        assert_eq!(key_position("", "", "x"), None);
    }

    #[test]
    fn a_value_equal_to_the_key_is_not_the_key() {
        let text = "poll:\n  timeout: colour\n  colour: 1\n";
        assert_eq!(key_position(text, "poll", "colour"), Some((3, 3)));
    }
}
