//! Deserializing parsed TOML while collecting *every* error, not only the first.
//!
//! serde stops at the first error. [`deserialize_all`] records it (with its position), removes
//! the entry it points into from the parsed table and tries again, so one wrong field does not
//! hide the next. The types deserialized this way keep all fields optional or defaulted, so a
//! removed entry never turns into a second, misleading "missing field" error.

use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde_spanned::Spanned;
use toml::de::{DeArray, DeTable, DeValue, ValueDeserializer};

use super::diagnostic::{FileCx, one_of_hint};
use super::duration;

/// One step of a path into a parsed TOML document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A key of a table.
    Key(String),
    /// An element of an array.
    Index(usize),
}

/// A path of table keys, e.g. `path(&["engine", "workers"])`.
pub(crate) fn path(keys: &[&str]) -> Vec<Seg> {
    keys.iter().map(|k| Seg::Key((*k).to_string())).collect()
}

/// `engine.workers`, `rules.files[2]`, `kafka.properties."session.timeout.ms"`.
pub(crate) fn display_path(prefix: &str, path: &[Seg]) -> String {
    let mut out = prefix.to_string();
    for seg in path {
        match seg {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    out.push_str(key);
                } else {
                    out.push_str(&format!("{key:?}"));
                }
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Parses a whole document, recording syntax errors, and returns the (possibly partial) root
/// table as a value.
pub(crate) fn parse_document<'t>(cx: &mut FileCx<'_>, text: &'t str) -> Spanned<DeValue<'t>> {
    let (root, errors) = DeTable::parse_recoverable(text);
    for error in &errors {
        cx.syntax(error);
    }
    // The root table has an empty span at the start of the file: problems with the file as a
    // whole are reported at 1:1.
    Spanned::new(0..0, DeValue::Table(root.into_inner()))
}

/// The root table of a document from [`parse_document`].
pub(crate) fn root_table<'a, 't>(root: &'a Spanned<DeValue<'t>>) -> Option<&'a DeTable<'t>> {
    match root.get_ref() {
        DeValue::Table(table) => Some(table),
        _ => None,
    }
}

/// The value at `path` below `root`.
pub(crate) fn value_at<'a, 't>(
    root: &'a Spanned<DeValue<'t>>,
    path: &[Seg],
) -> Option<&'a Spanned<DeValue<'t>>> {
    let mut here = root;
    for seg in path {
        here = match (here.get_ref(), seg) {
            (DeValue::Table(table), Seg::Key(key)) => table.get(key.as_str())?,
            (DeValue::Array(items), Seg::Index(i)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(here)
}

/// The span of the key at the end of `path` below `root` (falls back to the value's span).
pub(crate) fn key_span_at(root: &Spanned<DeValue<'_>>, path: &[Seg]) -> Option<Range<usize>> {
    let (last, parent) = path.split_last()?;
    match (value_at(root, parent)?.get_ref(), last) {
        (DeValue::Table(table), Seg::Key(key)) => {
            table.get_key_value(key.as_str()).map(|(k, _)| k.span())
        }
        _ => value_at(root, path).map(Spanned::span),
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// The entry an error span points into: preferably one whose *key* contains the span (unknown
/// fields), else one whose value contains it (wrong types). Among several, the one with the
/// smallest span wins (the most specific), and among equal spans the shallowest (an array of
/// tables has the span of its first element).
fn entry_at(root: &DeValue<'_>, span: &Range<usize>) -> Option<Vec<Seg>> {
    /// Candidate rank: key hit first, then smaller span, then shallower path.
    type Best = Option<((bool, usize, usize), Vec<Seg>)>;
    fn consider(here: &[Seg], key_hit: bool, hit: &Range<usize>, best: &mut Best) {
        let rank = (key_hit, usize::MAX - hit.len(), usize::MAX - here.len());
        if best.as_ref().is_none_or(|(best_rank, _)| rank > *best_rank) {
            *best = Some((rank, here.to_vec()));
        }
    }
    fn walk(value: &DeValue<'_>, span: &Range<usize>, here: &mut Vec<Seg>, best: &mut Best) {
        match value {
            DeValue::Table(table) => {
                for (key, item) in table.iter() {
                    here.push(Seg::Key(key.get_ref().to_string()));
                    if contains(&key.span(), span) {
                        consider(here, true, &key.span(), best);
                    } else if contains(&item.span(), span) {
                        consider(here, false, &item.span(), best);
                    }
                    walk(item.get_ref(), span, here, best);
                    here.pop();
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    here.push(Seg::Index(i));
                    if contains(&item.span(), span) {
                        consider(here, false, &item.span(), best);
                    }
                    walk(item.get_ref(), span, here, best);
                    here.pop();
                }
            }
            _ => {}
        }
    }
    let mut best = None;
    walk(root, span, &mut Vec::new(), &mut best);
    best.map(|(_, path)| path)
}

/// Removes the entry at `path`; false when there is none.
pub(crate) fn remove_at(value: &mut DeValue<'_>, path: &[Seg]) -> bool {
    match (value, path) {
        (_, []) => false,
        (DeValue::Table(table), [Seg::Key(key)]) => table.remove(key.as_str()).is_some(),
        (DeValue::Array(items), [Seg::Index(i)]) => {
            if *i >= items.len() {
                return false;
            }
            let kept: DeArray<'_> = items
                .iter()
                .enumerate()
                .filter(|(j, _)| j != i)
                .map(|(_, item)| item.clone())
                .collect();
            *items = kept;
            true
        }
        (DeValue::Table(table), [Seg::Key(key), rest @ ..]) => table
            .get_mut(key.as_str())
            .is_some_and(|item| remove_at(item.get_mut(), rest)),
        (DeValue::Array(items), [Seg::Index(i), rest @ ..]) => items
            .get_mut(*i)
            .is_some_and(|item| remove_at(item.get_mut(), rest)),
        _ => false,
    }
}

/// Deserializes `T` from `value`, recording every error in `cx`: after each error the entry it
/// points into is removed and deserialization retried. `prefix` names `value` in messages
/// (e.g. `""` for a document root). Returns `None` when no value could be built.
pub(crate) fn deserialize_all<T: DeserializeOwned>(
    cx: &mut FileCx<'_>,
    value: Spanned<DeValue<'_>>,
    prefix: &str,
) -> Option<T> {
    deserialize_reporting(cx, value, prefix).0
}

/// [`deserialize_all`], also returning the top-level keys whose entries were removed because
/// of an error (so callers do not report them as missing too).
pub(crate) fn deserialize_reporting<T: DeserializeOwned>(
    cx: &mut FileCx<'_>,
    mut value: Spanned<DeValue<'_>>,
    prefix: &str,
) -> (Option<T>, Vec<String>) {
    let mut removed: Vec<Vec<Seg>> = Vec::new();
    let mut reported: Vec<Range<usize>> = Vec::new();
    let top_level = |removed: Vec<Vec<Seg>>| -> Vec<String> {
        removed
            .into_iter()
            .filter_map(|p| match p.first() {
                Some(Seg::Key(key)) => Some(key.clone()),
                _ => None,
            })
            .collect()
    };
    // Each round removes one entry, so this ends; the bound is only a safety net.
    for _ in 0..10_000 {
        let error = match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(result) => return (Some(result), top_level(removed)),
            Err(error) => error,
        };
        let span = error.span().unwrap_or_else(|| value.span());
        if let Some(field) = backticked(error.message())
            .first()
            .filter(|_| error.message().starts_with("missing field"))
        {
            // A required field we removed ourselves was already reported.
            let ours = removed
                .iter()
                .any(|p| matches!(p.last(), Some(Seg::Key(k)) if k == field));
            if !ours {
                let table = entry_at(value.get_ref(), &span).unwrap_or_default();
                let mut full = table;
                full.push(Seg::Key((*field).to_string()));
                cx.missing(
                    span,
                    format!("missing required field `{}`", display_path(prefix, &full)),
                    None,
                );
            }
            return (None, top_level(removed));
        }
        // An error about `value` itself cannot be fixed by removing one of its entries.
        let entry = if span == value.span() {
            Vec::new()
        } else {
            entry_at(value.get_ref(), &span).unwrap_or_default()
        };
        // A second error at the same place is a consequence of the first.
        if !reported.contains(&span) {
            let (message, hint) = describe(error.message(), &display_path(prefix, &entry));
            cx.error(span.clone(), message, hint);
            reported.push(span);
        }
        if !remove_at(value.get_mut(), &entry) {
            return (None, top_level(removed));
        }
        removed.push(entry);
    }
    (None, top_level(removed))
}

/// The `quoted` words of a serde message.
fn backticked(message: &str) -> Vec<&str> {
    message.split('`').skip(1).step_by(2).collect()
}

/// Rewrites serde's "expected" vocabulary in TOML terms.
fn toml_terms(expected: &str) -> String {
    match expected {
        "usize" | "u64" | "u32" | "u16" | "u8" => "a non-negative integer".to_string(),
        "isize" | "i64" | "i32" | "i16" | "i8" => "an integer".to_string(),
        "f64" | "f32" => "a number".to_string(),
        "a sequence" | "sequence" => "an array".to_string(),
        "a map" | "map" => "a table".to_string(),
        "path string" => "a path string".to_string(),
        other if other.starts_with("struct ") => "a table".to_string(),
        other => other.to_string(),
    }
}

/// Turns a serde error message about the entry at `path` into a message and a hint.
fn describe(message: &str, path: &str) -> (String, Option<String>) {
    let named = |what: &str| {
        if path.is_empty() {
            what.to_string()
        } else {
            format!("`{path}`")
        }
    };
    if message.starts_with("unknown field") {
        let words = backticked(message);
        let field = words.first().copied().unwrap_or_default();
        let expected = words.get(1..).unwrap_or_default();
        let hint = (!expected.is_empty()).then(|| one_of_hint(field, expected));
        let what = if path.is_empty() {
            format!("`{field}`")
        } else {
            format!("`{path}`")
        };
        return (format!("unknown field {what}"), hint);
    }
    if message.starts_with("unknown variant") {
        let words = backticked(message);
        let variant = words.first().copied().unwrap_or_default();
        let expected = words.get(1..).unwrap_or_default();
        let hint = (!expected.is_empty()).then(|| one_of_hint(variant, expected));
        return (
            format!("unknown value `{variant}` for {}", named("this field")),
            hint,
        );
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            let found = match found {
                "map" => "a table",
                "sequence" => "an array",
                other => other,
            };
            let hint = if expected == duration::EXPECTED {
                Some(duration::HINT.to_string())
            } else if expected == "a string"
                && let Some(bare) = backticked(found).first()
            {
                Some(format!("strings are written in quotes: \"{bare}\""))
            } else {
                None
            };
            return (
                format!(
                    "{} must be {}, found {found}",
                    named("the value"),
                    toml_terms(expected)
                ),
                hint,
            );
        }
    }
    if message.contains("number overflowed") {
        return (format!("{} is out of range", named("the number")), None);
    }
    let hint = message
        .starts_with(duration::INVALID)
        .then(|| duration::HINT.to_string());
    if path.is_empty() {
        (message.to_string(), hint)
    } else {
        (format!("`{path}`: {message}"), hint)
    }
}

/// A table of string values that keeps the span of every key and value (scope selectors,
/// labels), in the order the deserializer yields them.
#[derive(Clone, Debug, Default)]
pub(crate) struct SpannedPairs(pub(crate) Vec<(Spanned<String>, Spanned<String>)>);

struct PairsVisitor;

impl<'de> Visitor<'de> for PairsVisitor {
    type Value = SpannedPairs;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a table of strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SpannedPairs, A::Error> {
        let mut pairs = Vec::new();
        while let Some(pair) = map.next_entry::<Spanned<String>, Spanned<String>>()? {
            pairs.push(pair);
        }
        Ok(SpannedPairs(pairs))
    }
}

impl<'de> Deserialize<'de> for SpannedPairs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(PairsVisitor)
    }
}

/// Either a fixed word (e.g. `"all"`) or a table of strings with spans.
#[derive(Clone, Debug)]
pub(crate) enum WordOrPairs {
    /// A string.
    Word(String),
    /// A table of strings.
    Pairs(SpannedPairs),
}

struct WordOrPairsVisitor;

impl<'de> Visitor<'de> for WordOrPairsVisitor {
    type Value = WordOrPairs;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"all\" or a table of label selectors")
    }

    fn visit_str<E: de::Error>(self, word: &str) -> Result<WordOrPairs, E> {
        Ok(WordOrPairs::Word(word.to_string()))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<WordOrPairs, A::Error> {
        PairsVisitor.visit_map(map).map(WordOrPairs::Pairs)
    }
}

impl<'de> Deserialize<'de> for WordOrPairs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WordOrPairsVisitor)
    }
}

impl schemars::JsonSchema for SpannedPairs {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StringTable".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "additionalProperties": { "type": "string" },
        })
    }
}

impl schemars::JsonSchema for WordOrPairs {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "WordOrStringTable".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [
                { "type": "string", "enum": ["all"] },
                generator.subschema_for::<SpannedPairs>(),
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        n: Option<u32>,
        s: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[allow(dead_code)]
        a: Option<u32>,
        #[serde(default)]
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<String>,
    }

    #[test]
    fn reports_every_error_and_keeps_the_rest() {
        let text = "a = \"x\"\nb = 1\nlist = [\"ok\", 5]\n[inner]\nn = -1\ns = \"fine\"\nm = 2\n";
        let mut cx = FileCx::new(Path::new("t.toml"), text);
        let root = parse_document(&mut cx, text);
        let outer: Option<Outer> = deserialize_all(&mut cx, root, "");
        let inner_s = outer
            .as_ref()
            .and_then(|o| o.inner.as_ref())
            .and_then(|i| i.s.clone());
        assert_eq!(inner_s.as_deref(), Some("fine"));
        assert_eq!(outer.map(|o| o.list), Some(vec!["ok".to_string()]));
        let found: Vec<String> = cx
            .finish()
            .iter()
            .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
            .collect();
        assert_eq!(
            found,
            vec![
                "1:5 `a` must be a non-negative integer, found string \"x\"",
                "2:1 unknown field `b`",
                "3:15 `list[1]` must be a string, found integer `5`",
                "5:5 `inner.n` must be a non-negative integer, found integer `-1`",
                "7:1 unknown field `inner.m`",
            ]
        );
    }

    #[test]
    fn paths_are_quoted_when_needed() {
        assert_eq!(
            display_path(
                "kafka",
                &[
                    Seg::Key("properties".into()),
                    Seg::Key("a.b".into()),
                    Seg::Index(1)
                ]
            ),
            "kafka.properties.\"a.b\"[1]"
        );
    }
}
