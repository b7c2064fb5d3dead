//! Configuration errors: every problem found in one file, each with its key path and, where the
//! TOML parser can tell, its line and column.
//!
//! What a message echoes from the file is made safe here, in one place: a value is quoted with
//! [`quoted`] (control and invisible characters escaped, cut after [`MAX_ECHO_CHARS`]), and every
//! key path and message goes through [`escaped`] when it becomes a [`Problem`] (cut after
//! [`MAX_MESSAGE_CHARS`]), so a value can neither forge a line of output (a newline, an escape
//! sequence) nor make one unbounded. A rendered error lists at most [`MAX_LISTED_PROBLEMS`].

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Most characters of a value a message quotes; the rest is cut and counted.
pub const MAX_ECHO_CHARS: usize = 64;
/// Most characters of a key path or a message.
pub const MAX_MESSAGE_CHARS: usize = 512;
/// Most problems a rendered error lists; the count in its first line is the full one.
pub const MAX_LISTED_PROBLEMS: usize = 100;

/// `value` as a message quotes it: in double quotes, `"` and `\` escaped, control and invisible
/// characters escaped, and cut after [`MAX_ECHO_CHARS`] characters with the length said.
pub fn quoted(value: &str) -> String {
    let mut out = String::from("\"");
    let mut chars = value.chars();
    for c in chars.by_ref().take(MAX_ECHO_CHARS) {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => push_escaped(&mut out, c),
        }
    }
    out.push('"');
    if chars.next().is_some() {
        out.push_str(&format!("... ({} bytes)", value.len()));
    }
    out
}

/// A TOML key as a key path writes it: bare when it can be, quoted (and so cut) otherwise.
pub fn key(key: &str) -> String {
    let bare = !key.is_empty()
        && key.len() <= MAX_ECHO_CHARS
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if bare {
        key.to_owned()
    } else {
        quoted(key)
    }
}

/// `text` with control and invisible characters escaped (`\n`, `\u{1b}`, ...), cut after
/// [`MAX_MESSAGE_CHARS`] characters: what a key path or a message may print.
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE_CHARS));
    let mut chars = text.chars();
    for c in chars.by_ref().take(MAX_MESSAGE_CHARS) {
        push_escaped(&mut out, c);
    }
    if chars.next().is_some() {
        out.push_str("...");
    }
    out
}

/// Pushes `c`, escaped when it could move the cursor, change the terminal or hide text: control
/// characters, line and paragraph separators, bidirectional overrides, zero-width characters.
fn push_escaped(out: &mut String, c: char) {
    let invisible = c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}');
    if invisible {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

/// One mistake in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path with the entry's name where it has one: `targets[2] "kafka-b".timeout`.
    pub path: String,
    /// What is wrong, quoting the offending value.
    pub message: String,
    /// 1-based line and column of the value, when known.
    pub location: Option<(usize, usize)>,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: crate::files::FileError },
    /// The file was read; these are all the problems found in it.
    #[error("{}", render(file, problems))]
    Invalid { file: PathBuf, problems: Vec<Problem> },
}

impl ConfigError {
    /// The problems found, empty when the file could not be read at all.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

fn render(file: &Path, problems: &[Problem]) -> String {
    let mut out = format!(
        "{}: {} problem{} found",
        escaped(&file.display().to_string()),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems.iter().take(MAX_LISTED_PROBLEMS) {
        out.push('\n');
        out.push_str(&p.render(file));
    }
    if problems.len() > MAX_LISTED_PROBLEMS {
        out.push_str(&format!("\n... and {} more", problems.len() - MAX_LISTED_PROBLEMS));
    }
    out
}

impl Problem {
    /// A problem whose path and message are made printable (see [`escaped`]).
    pub fn new(path: &str, message: &str, location: Option<(usize, usize)>) -> Problem {
        Problem { path: escaped(path), message: escaped(message), location }
    }

    /// `file:line:col: path: message`, or without line and column when unknown.
    pub fn render(&self, file: &Path) -> String {
        let file = escaped(&file.display().to_string());
        let path = if self.path.is_empty() { String::new() } else { format!("{}: ", self.path) };
        match self.location {
            Some((line, col)) => format!("{file}:{line}:{col}: {path}{}", self.message),
            None => format!("{file}: {path}{}", self.message),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Collects problems while validating, turning byte spans into lines and columns.
pub struct Problems<'a> {
    source: &'a str,
    list: Vec<Problem>,
}

impl<'a> Problems<'a> {
    pub fn new(source: &'a str) -> Self {
        Problems { source, list: Vec::new() }
    }

    /// Records a problem at `span` (pass `None` when the mistake has no single place).
    pub fn add(&mut self, path: impl Into<String>, span: Option<Range<usize>>, message: String) {
        let location = span.map(|s| line_col(self.source, s.start));
        self.list.push(Problem::new(&path.into(), &message, location));
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The problems in file order; those without a place come last.
    pub fn into_vec(mut self) -> Vec<Problem> {
        self.list.sort_by_key(|p| p.location.unwrap_or((usize::MAX, 0)));
        self.list
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = source[line_start..offset].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let src = "a = 1\nbé = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, src.find('=').unwrap()), (1, 3));
        // Column counts characters, not bytes.
        assert_eq!(line_col(src, src.rfind('=').unwrap()), (2, 4));
        assert_eq!(line_col(src, 1000), (3, 1));
    }

    #[test]
    fn echoed_values_are_quoted_escaped_and_cut() {
        assert_eq!(quoted("kafka-a"), "\"kafka-a\"");
        assert_eq!(quoted("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quoted("x\u{1b}[2K\nbad.toml:1:1: forged"), r#""x\u{1b}[2K\nbad.toml:1:1: forged""#);
        assert_eq!(quoted("\u{202e}evil\u{2028}"), r#""\u{202e}evil\u{2028}""#);
        let long = "é".repeat(10_000);
        let q = quoted(&long);
        assert_eq!(q, format!("\"{}\"... (20000 bytes)", "é".repeat(MAX_ECHO_CHARS)));
        let message = format!("a\tb{}", "c".repeat(2 * MAX_MESSAGE_CHARS));
        let e = escaped(&message);
        assert!(
            e.starts_with("a\\tbccc") && e.ends_with("c...") && e.chars().count() == MAX_MESSAGE_CHARS + 4
        );
        assert!(!e.contains('\t'));
    }

    #[test]
    fn a_rendered_error_lists_a_bounded_number_of_problems() {
        let problems: Vec<Problem> = (0..MAX_LISTED_PROBLEMS + 5)
            .map(|i| Problem::new("k", &format!("p{i}"), Some((i + 1, 1))))
            .collect();
        let text = ConfigError::Invalid { file: "c.toml".into(), problems }.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("c.toml: {} problems found", MAX_LISTED_PROBLEMS + 5));
        assert_eq!(lines.len(), MAX_LISTED_PROBLEMS + 2);
        assert_eq!(lines[lines.len() - 1], "... and 5 more");
    }
}
