//! What several bench binaries share (a module of each, not a bench of its own).

use std::path::PathBuf;

use citybrain_operators::rule::RuleRow;

/// The rules of the rule files the environment variable `var` names (`FILE[,FILE...]`, the
/// engine's TOML, loaded with the engine's own loader; paths relative to `benches/`), to add
/// to the workload's two; none when it is unset. Exits with the loader's errors when a file
/// does not load: a bench that quietly ran without them would measure something else.
pub fn rules_named_by(var: &str, bench: &str) -> Vec<RuleRow> {
    let Ok(files) = std::env::var(var) else {
        return Vec::new();
    };
    let paths: Vec<PathBuf> = files.split(',').map(PathBuf::from).collect();
    match citybrain_engine::config::load_rule_files(&paths) {
        Ok(rules) => rules,
        Err(errors) => {
            eprintln!("{bench}: {var}: {errors}");
            std::process::exit(2);
        }
    }
}
