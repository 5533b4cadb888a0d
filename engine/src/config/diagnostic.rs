//! Problems found in config and rule files, with their positions.
//!
//! Every problem carries the file, a 1-based line and column, a message and, where there is
//! something useful to say, a hint. Loading collects the problems of all files in one pass and
//! returns them together as [`Diagnostics`]:
//!
//! ```text
//! config/rules/mine.toml:7:9: error: unknown mine metric `ch5`
//!   hint: did you mean `ch4`? expected one of: ch4, co, air_velocity, airflow, temperature
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One problem in a config or rule file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Diagnostic {
    /// The file the problem is in, as it was given (or resolved against the config directory).
    pub file: PathBuf,
    /// 1-based line; 0 when the problem concerns the whole file (e.g. it cannot be read).
    pub line: usize,
    /// 1-based column, counted in characters; 0 when `line` is 0.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A problem with a whole file (line and column 0), e.g. one that cannot be read.
    pub fn whole_file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.into(),
            line: 0,
            column: 0,
            message: message.into(),
            hint: None,
        }
    }

    /// The same diagnostic with `hint`.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// `path:line:col: error: message`, then `  hint: ...` on a second line when there is a hint.
/// A whole-file problem omits `line:col`.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": error: {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Every problem found while loading or validating, in file order and, within a file, in
/// position order. Displays one diagnostic after the other.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(transparent)]
#[error("{}", render(.0))]
pub struct Diagnostics(pub Vec<Diagnostic>);

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(Diagnostic::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Diagnostics {
    /// True when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The problems, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// `Ok(value)` when nothing is wrong, else `Err(self)`.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Removes repeated diagnostics (e.g. a rule file validated directly and through its config),
/// keeping the first of each.
pub(crate) fn dedup(diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut seen = BTreeSet::new();
    diagnostics
        .into_iter()
        .filter(|d| seen.insert(d.clone()))
        .collect()
}

/// How a problem relates to TOML syntax errors in the same file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// A TOML syntax error.
    Syntax,
    /// A problem with something that is in the file.
    Present,
    /// A problem with something that is *not* in the file (a missing field). After a syntax
    /// error the parser may have dropped what is missing, so these are not reported then.
    Absent,
}

#[derive(Debug)]
struct Found {
    span: Range<usize>,
    message: String,
    hint: Option<String>,
    class: Class,
}

/// Collects the problems of one file, with byte spans, and turns them into [`Diagnostic`]s
/// with line and column at the end.
pub(crate) struct FileCx<'t> {
    path: PathBuf,
    text: &'t str,
    line_starts: Vec<usize>,
    found: Vec<Found>,
}

impl<'t> FileCx<'t> {
    /// A context for `text`, the contents of `path`.
    pub(crate) fn new(path: &Path, text: &'t str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        FileCx {
            path: path.to_path_buf(),
            text,
            line_starts,
            found: Vec::new(),
        }
    }

    /// How many problems were found so far.
    pub(crate) fn count(&self) -> usize {
        self.found.len()
    }

    /// Records a problem with what is at `span`.
    pub(crate) fn error(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.push(span, message.into(), hint, Class::Present);
    }

    /// Records that something required is missing from the table at `span`.
    pub(crate) fn missing(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.push(span, message.into(), hint, Class::Absent);
    }

    /// Records a TOML syntax error reported by the parser.
    pub(crate) fn syntax(&mut self, error: &toml::de::Error) {
        let span = error.span().unwrap_or(0..0);
        // The parser's messages read "what, expected what"; the second half is the hint.
        let (what, expected) = match error.message().split_once(", expected ") {
            Some((what, expected)) => (what, Some(expected)),
            None => (error.message(), None),
        };
        let hint = expected
            .filter(|e| *e != "nothing")
            .map(|e| format!("expected {e}"));
        self.push(
            span,
            format!("TOML syntax error: {}", what.trim()),
            hint,
            Class::Syntax,
        );
    }

    fn push(&mut self, span: Range<usize>, message: String, hint: Option<String>, class: Class) {
        self.found.push(Found {
            span,
            message,
            hint,
            class,
        });
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self
            .line_starts
            .partition_point(|&start| start <= offset)
            .max(1);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let column = match self.text.get(start..offset) {
            Some(prefix) => prefix.chars().count(),
            None => offset - start,
        };
        (line, column + 1)
    }

    /// `path:line:col` of the start of `span`, for messages that refer to another place.
    pub(crate) fn location(&self, span: &Range<usize>) -> String {
        let (line, column) = self.position(span.start);
        format!("{}:{line}:{column}", self.path.display())
    }

    /// The diagnostics, sorted by position. When the file has syntax errors, problems on the
    /// same lines and problems about missing things are left out: they are most likely
    /// consequences of the syntax errors.
    pub(crate) fn finish(self) -> Vec<Diagnostic> {
        let syntax_lines: BTreeSet<usize> = self
            .found
            .iter()
            .filter(|f| f.class == Class::Syntax)
            .map(|f| self.position(f.span.start).0)
            .collect();
        let mut out: Vec<Diagnostic> = self
            .found
            .iter()
            .filter_map(|f| {
                let (line, column) = self.position(f.span.start);
                let keep = match f.class {
                    Class::Syntax => true,
                    Class::Present => !syntax_lines.contains(&line),
                    Class::Absent => syntax_lines.is_empty(),
                };
                keep.then(|| Diagnostic {
                    file: self.path.clone(),
                    line,
                    column,
                    message: f.message.clone(),
                    hint: f.hint.clone(),
                })
            })
            .collect();
        out.sort_by_key(|d| (d.line, d.column));
        dedup(out)
    }
}

/// Edit distance between two words, in characters, counting a swap of two neighbours as one
/// edit (optimal string alignment), so `mien` is one edit from `mine`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between the first i characters of a and the first j of b.
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate `word` is most likely a misspelling of, if any is close enough.
pub(crate) fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// "did you mean `x`? expected one of: a, b, c" (the first part only when a candidate is close).
pub(crate) fn one_of_hint(word: &str, candidates: &[&str]) -> String {
    let list = format!("expected one of: {}", candidates.join(", "));
    match closest(word, candidates) {
        Some(close) => format!("did you mean `{close}`? {list}"),
        None => list,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\n# 注释\nbb = 2\n";
        let cx = FileCx::new(Path::new("f.toml"), text);
        assert_eq!(cx.position(0), (1, 1));
        assert_eq!(cx.position(4), (1, 5));
        assert_eq!(cx.position(6), (2, 1));
        // After the two 3-byte characters of the comment: column 5, not 9.
        assert_eq!(cx.position(6 + 2 + 6), (2, 5));
        assert_eq!(cx.position(text.find("bb").unwrap_or(0) + 3), (3, 4));
        assert_eq!(cx.position(10_000), (4, 1));
    }

    #[test]
    fn display_with_and_without_hint() {
        let d = Diagnostic {
            file: PathBuf::from("rules/mine.toml"),
            line: 3,
            column: 7,
            message: "unknown field `abve`".into(),
            hint: Some("did you mean `above`?".into()),
        };
        assert_eq!(
            d.to_string(),
            "rules/mine.toml:3:7: error: unknown field `abve`\n  hint: did you mean `above`?"
        );
        let whole = Diagnostic::whole_file("x.toml", "cannot read");
        assert_eq!(whole.to_string(), "x.toml: error: cannot read");
        let all = Diagnostics(vec![d, whole]);
        assert_eq!(all.to_string().lines().count(), 3);
    }

    #[test]
    fn serializes_to_json() {
        let d = Diagnostic::whole_file("a.toml", "m").with_hint("h");
        assert_eq!(
            serde_json::to_value(Diagnostics(vec![d])).ok(),
            Some(serde_json::json!([
                {"file": "a.toml", "line": 0, "column": 0, "message": "m", "hint": "h"}
            ]))
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(distance("abve", "above"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("mien", "mine"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(closest("abve", &["above", "below"]), Some("above"));
        assert_eq!(closest("xyz", &["above", "below"]), None);
        assert_eq!(
            one_of_hint("critcal", &["info", "warning", "critical"]),
            "did you mean `critical`? expected one of: info, warning, critical"
        );
    }
}
