//! Configuration errors: every problem found in one file, each with its key path and, where the
//! TOML parser can tell, its line and column.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

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
        file.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push('\n');
        out.push_str(&p.render(file));
    }
    out
}

impl Problem {
    /// `file:line:col: path: message`, or without line and column when unknown.
    pub fn render(&self, file: &Path) -> String {
        let path = if self.path.is_empty() { String::new() } else { format!("{}: ", self.path) };
        match self.location {
            Some((line, col)) => format!("{}:{line}:{col}: {path}{}", file.display(), self.message),
            None => format!("{}: {path}{}", file.display(), self.message),
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
        self.list.push(Problem { path: path.into(), message, location });
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
}
