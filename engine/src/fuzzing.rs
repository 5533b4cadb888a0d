//! The properties the fuzz targets in `fuzz/` check for the config parsers, shared with the
//! test that replays the committed corpus (`engine/tests/fuzz_corpus.rs`) so CI checks every
//! corpus input on stable Rust too.
//!
//! Each `check_*` function takes one arbitrary input (not UTF-8: ignored, as a config file
//! that is not UTF-8 cannot be read as text), parses it and panics when a property does not
//! hold:
//!
//! - parsing never panics;
//! - a failure says something: at least one diagnostic, each naming the file, with a line and
//!   column inside the text (line 0 and column 0 only together, for the whole file), and each
//!   displays;
//! - parsing is deterministic: the same text gives the same result a second time (diagnostics
//!   in the same order).
//!
//! Not a stable API: only the fuzz targets and tests use it.

use std::fmt::Debug;
use std::path::Path;

use crate::config::{self, Diagnostics};

/// The path the fuzzed texts are said to come from (only used in diagnostics, and as the base
/// directory of a mapping's data file, which is never read).
pub const FUZZ_PATH: &str = "fuzz/input.toml";

fn check_diagnostics(text: &str, diagnostics: &Diagnostics) {
    assert!(!diagnostics.is_empty(), "a failure without a diagnostic");
    let lines: Vec<&str> = text.split('\n').collect();
    for d in diagnostics {
        assert_eq!(d.file, Path::new(FUZZ_PATH), "{d:?}");
        if d.line == 0 {
            assert_eq!(d.column, 0, "{d:?}");
        } else {
            let line = lines.get(d.line - 1);
            assert!(line.is_some(), "line {} of {}: {d:?}", d.line, lines.len());
            let chars = line.map_or(0, |l| l.chars().count());
            assert!(
                (1..=chars + 1).contains(&d.column),
                "column {} of a line of {chars} characters: {d:?}",
                d.column
            );
        }
        assert!(!d.to_string().is_empty());
    }
}

fn check<T: PartialEq + Debug>(input: &[u8], load: fn(&Path, &str) -> Result<T, Diagnostics>) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let path = Path::new(FUZZ_PATH);
    let first = load(path, text);
    if let Err(diagnostics) = &first {
        check_diagnostics(text, diagnostics);
    }
    let second = load(path, text);
    assert_eq!(first, second, "two loads of the same text differ");
}

/// Parses `input` as a main config file (`config::load_str`) and checks the properties.
pub fn check_config(input: &[u8]) {
    check(input, config::load_str);
}

/// Parses `input` as a rule file (`config::load_rules_str`) and checks the properties.
pub fn check_rules(input: &[u8]) {
    check(input, config::load_rules_str);
}

/// Parses `input` as a KPI file (`config::load_kpis_str`) and checks the properties.
pub fn check_kpis(input: &[u8]) {
    check(input, config::load_kpis_str);
}

/// Parses `input` as a replay mapping file (`config::load_mapping_str`) and checks the
/// properties.
pub fn check_mapping(input: &[u8]) {
    check(input, config::load_mapping_str);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_hold() {
        for input in [
            &b""[..],
            b"[engine]\nworkers = 0\n",
            b"[[rule]]\nid = \"x\"\nkind = \"threshold\"\n",
            b"[[kpi]]\nname = 1\n",
            b"file = \"a.csv\"\n[time\n",
            b"\xff\xfe",
        ] {
            check_config(input);
            check_rules(input);
            check_kpis(input);
            check_mapping(input);
        }
    }
}
