//! Field paths (`rules[2].quorum`) and the line where such a field is written.
//!
//! serde reports where a value is wrong as a path, not a line, and semantic checks after parsing
//! know only the path. This finds the line by walking block-style YAML by indentation. It is
//! best effort: inside flow style (`[a, b]`, `{k: v}`) it stops at the deepest line it found.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A path from a document's root to one field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    pub fn key(mut self, key: &str) -> Self {
        self.0.push(Seg::Key(key.into()));
        self
    }

    pub fn index(mut self, index: usize) -> Self {
        self.0.push(Seg::Index(index));
        self
    }

    pub fn from_serde(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        let segs = path.iter().filter_map(|s| match s {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Enum { .. } | Segment::Unknown => None,
        });
        FieldPath(segs.collect())
    }

    /// The dotted form, or `None` for the document root.
    pub fn dotted(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| self.to_string())
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// One line that carries content: its 1-based number, the column of its content, and whether
/// it opens a sequence item (`- `), in which case `body` is what follows the dash.
#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    no: usize,
    col: usize,
    dash: bool,
    body_col: usize,
    body: &'a str,
}

/// The 1-based line of the field at `path`, or of its deepest ancestor that could be found.
pub(crate) fn line_of(text: &str, path: &FieldPath) -> Option<usize> {
    let mut scope = lines(text);
    let mut found = None;
    for seg in &path.0 {
        let step = match seg {
            Seg::Key(k) => find_key(&scope, k),
            Seg::Index(i) => find_item(&scope, *i),
        };
        let Some((line, inner)) = step else { break };
        found = Some(line);
        scope = inner;
    }
    found
}

fn lines(text: &str) -> Vec<Line<'_>> {
    text.lines()
        .enumerate()
        .filter_map(|(i, raw)| parse_line(i + 1, raw))
        .collect()
}

fn parse_line(no: usize, raw: &str) -> Option<Line<'_>> {
    let body = raw.trim_start();
    if body.is_empty() || body.starts_with('#') || body.starts_with("---") || body == "..." {
        return None;
    }
    let col = raw.len() - body.len();
    let after = (body == "-")
        .then_some("")
        .or_else(|| body.strip_prefix("- "));
    let (dash, inner) = match after {
        Some(rest) => (true, rest.trim_start()),
        None => (false, body),
    };
    let body_col = raw.len() - inner.len();
    Some(Line {
        no,
        col,
        dash,
        body_col,
        body: inner,
    })
}

/// Finds `key` among the mapping entries at the scope's indentation; returns its line and the
/// lines of its value.
fn find_key<'a>(scope: &[Line<'a>], key: &str) -> Option<(usize, Vec<Line<'a>>)> {
    let col = scope.first()?.col;
    let at = scope
        .iter()
        .position(|l| l.col == col && !l.dash && key_of(l.body) == Some(key))?;
    // A block sequence may sit at its key's own indentation.
    let value = scope[at + 1..]
        .iter()
        .take_while(|l| l.col > col || (l.col == col && l.dash))
        .copied()
        .collect();
    Some((scope[at].no, value))
}

/// Finds the `index`th item of the block sequence that starts the scope; returns its line and
/// its lines, the first one seen without its dash so that its key lines up with the next ones.
fn find_item<'a>(scope: &[Line<'a>], index: usize) -> Option<(usize, Vec<Line<'a>>)> {
    let col = scope.first().filter(|l| l.dash)?.col;
    let at = scope
        .iter()
        .enumerate()
        .filter(|(_, l)| l.col == col && l.dash)
        .nth(index)?
        .0;
    let item = scope[at];
    let first = Line {
        col: item.body_col,
        dash: false,
        ..item
    };
    let first = (!item.body.is_empty()).then_some(first);
    let rest = scope[at + 1..].iter().take_while(|l| l.col > col).copied();
    Some((item.no, first.into_iter().chain(rest).collect()))
}

fn key_of(body: &str) -> Option<&str> {
    let (key, rest) = body.split_once(':')?;
    let is_key = rest.is_empty() || rest.starts_with([' ', '\t']);
    is_key.then(|| key.trim().trim_matches(['"', '\'']))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# comment
defaults:
  verdict: approve
rules:
  - id: a
    match:
      server: [x, y]
    verdict: allow
  -
    id: b
    verdict: approve
    quorum: 2
  - {id: c, verdict: allow}
other:
- one
- two: 2
";

    fn line(path: FieldPath) -> Option<usize> {
        line_of(TEXT, &path)
    }

    #[test]
    fn a_nested_key_is_found_on_its_own_line() {
        let p = FieldPath::default()
            .key("rules")
            .index(0)
            .key("match")
            .key("server");
        assert_eq!(line(p), Some(7));
        assert_eq!(
            line(FieldPath::default().key("defaults").key("verdict")),
            Some(3)
        );
    }

    #[test]
    fn the_first_key_of_an_item_is_found_on_the_dash_line() {
        assert_eq!(
            line(FieldPath::default().key("rules").index(0).key("id")),
            Some(5)
        );
        assert_eq!(
            line(FieldPath::default().key("rules").index(0).key("verdict")),
            Some(8)
        );
    }

    #[test]
    fn an_item_whose_dash_stands_alone_is_found() {
        assert_eq!(
            line(FieldPath::default().key("rules").index(1).key("quorum")),
            Some(12)
        );
        assert_eq!(line(FieldPath::default().key("rules").index(1)), Some(9));
    }

    #[test]
    fn flow_style_falls_back_to_the_deepest_line_found() {
        assert_eq!(
            line(FieldPath::default().key("rules").index(2).key("verdict")),
            Some(13)
        );
        let p = FieldPath::default()
            .key("rules")
            .index(0)
            .key("match")
            .key("server")
            .index(1);
        assert_eq!(line(p), Some(7));
    }

    #[test]
    fn a_sequence_at_its_keys_indentation_is_walked() {
        assert_eq!(
            line(FieldPath::default().key("other").index(1).key("two")),
            Some(16)
        );
    }

    #[test]
    fn a_path_displays_with_dots_and_brackets() {
        let p = FieldPath::default().key("rules").index(2).key("quorum");
        assert_eq!(p.to_string(), "rules[2].quorum");
        assert_eq!(
            FieldPath::default().index(0).key("expect").to_string(),
            "[0].expect"
        );
        assert_eq!(FieldPath::default().dotted(), None);
    }
}
