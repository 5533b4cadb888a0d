//! Loading and validating the engine's config: the main file (`citybrain.toml`, see
//! [`Config`]) and the rule files it lists (`[[rule]]` tables compiled to [`RuleRow`]s, one
//! variant per rule kind).
//!
//! Every problem of every file is reported in one pass, each with file, line, column, a
//! message and, where useful, a hint (see [`Diagnostic`]):
//!
//! ```text
//! config/citybrain.toml:3:11: error: `engine.workers` must be at least 1
//!   hint: leave it out to run one worker per available CPU core
//! config/rules/mine.toml:12:1: error: unknown field `abve`
//!   hint: did you mean `above`? expected one of: id, kind, domain, metric, scope, above, ...
//! ```
//!
//! Paths inside the main file (`rules.files`, `outputs.*_file`) are relative to the directory
//! of the main file; [`LoadedConfig::resolve`] resolves them.

mod de;
mod diagnostic;
mod dispatch;
mod duration;
mod engine;
mod kpis;
mod mapping;
mod rules;
pub mod schema;

use std::path::{Path, PathBuf};

use citybrain_operators::rule::RuleRow;
use serde_spanned::Spanned;
use toml::de::DeValue;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use dispatch::{
    ConfigSecret, DispatchConfig, DispatchConfigError, FormatConfig, FsyncMode, KafkaKeyConfig,
    ReceiverConfig, ReceiverKindConfig, RouteConfig, SilenceConfig,
};
pub use engine::{
    Config, EngineConfig, KafkaConfig, OutputsConfig, RecoveryConfig, RegistryConfig, ReloadConfig,
    RulesConfig, SourceConfig, SourcesConfig, default_workers,
};
pub use kpis::load_kpis_str;
pub use mapping::{
    DataFormat, Mapping, ReadingMapping, RegistryField, RegistryMapping, ReportMapping, RowTime,
    Template, TimeColumns, load_mapping, load_mapping_str,
};

use de::{Seg, deserialize_all, parse_document, path, value_at};
use diagnostic::{FileCx, dedup};
use rules::RuleSet;

/// A main config file with its rules compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedConfig {
    /// The main config, as written (paths not yet resolved).
    pub config: Config,
    /// The rules of every file in `config.rules.files`, in file order.
    pub rules: Vec<RuleRow>,
    /// The directory of the main config file; relative paths in it are relative to this.
    pub base_dir: PathBuf,
}

impl LoadedConfig {
    /// `path` from the config resolved against [`base_dir`](Self::base_dir) (absolute paths
    /// are returned unchanged).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }

    /// The rule files, resolved (e.g. to watch them for changes and reload them with
    /// [`load_rule_files`]).
    pub fn rule_files(&self) -> Vec<PathBuf> {
        self.config
            .rules
            .files
            .iter()
            .map(|f| self.resolve(f))
            .collect()
    }

    /// `reload.audit_log`, resolved.
    pub fn audit_log(&self) -> PathBuf {
        self.resolve(&self.config.reload.audit_log)
    }

    /// `outputs.alerts_file`, resolved.
    pub fn alerts_file(&self) -> Option<PathBuf> {
        self.config
            .outputs
            .alerts_file
            .as_deref()
            .map(|f| self.resolve(f))
    }

    /// `outputs.dead_letter_file`, resolved.
    pub fn dead_letter_file(&self) -> Option<PathBuf> {
        self.config
            .outputs
            .dead_letter_file
            .as_deref()
            .map(|f| self.resolve(f))
    }
}

/// The directory relative paths in the config file at `path` are relative to.
fn base_dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn read(path: &Path, what: &str) -> Result<String, Diagnostic> {
    std::fs::read_to_string(path)
        .map_err(|e| Diagnostic::whole_file(path, format!("cannot read {what}: {e}")))
}

/// Parses and checks the main config `text`, recording problems in `cx`; returns the parsed
/// document (for positions) and the config, if one could be built.
fn parse_config<'t>(cx: &mut FileCx<'_>, text: &'t str) -> (Spanned<DeValue<'t>>, Option<Config>) {
    let mut root = parse_document(cx, text);
    if let DeValue::Table(table) = root.get_mut()
        && let Some((key, _)) = table.remove_entry("rule")
    {
        cx.error(
            key.span(),
            "`[[rule]]` tables belong in a rule file",
            Some(
                "move them to a file such as rules/mine.toml and list it in `files` under [rules]"
                    .to_string(),
            ),
        );
    }
    let config = deserialize_all::<Config>(cx, root.clone(), "");
    if let Some(config) = &config {
        engine::validate(config, &root, cx);
    }
    (root, config)
}

/// Loads the main config at `path` (relative to `base_dir`) and compiles its rule files into
/// `rules`; problems of the main file go to `cx`, those of rule files to `rules`.
fn load_rules_of(
    config: &Config,
    root: &Spanned<DeValue<'_>>,
    base_dir: &Path,
    cx: &mut FileCx<'_>,
    rules: &mut RuleSet,
) {
    let mut seen: Vec<PathBuf> = Vec::new();
    for (i, file) in config.rules.files.iter().enumerate() {
        if file.as_os_str().is_empty() {
            continue; // already reported
        }
        let mut at = path(&["rules", "files"]);
        at.push(Seg::Index(i));
        let span = value_at(root, &at).map_or(0..0, Spanned::span);
        let resolved = base_dir.join(file);
        if seen.contains(&resolved) {
            cx.error(
                span,
                format!("rule file `{}` is listed twice", file.display()),
                None,
            );
            continue;
        }
        seen.push(resolved.clone());
        match std::fs::read_to_string(&resolved) {
            Ok(text) => rules.add_text(&resolved, &text),
            Err(e) => {
                let message = if e.kind() == std::io::ErrorKind::NotFound {
                    format!("rule file `{}` not found", resolved.display())
                } else {
                    format!("cannot read rule file `{}`: {e}", resolved.display())
                };
                cx.error(
                    span,
                    message,
                    Some(format!(
                        "rule files are relative to the directory of this config file ({})",
                        base_dir.display()
                    )),
                );
            }
        }
    }
}

/// Loads the main config `text` read from `path`, with its rule files; returns what could be
/// loaded and every problem found.
fn load_text(path: &Path, text: &str) -> (Option<LoadedConfig>, Vec<Diagnostic>) {
    let base_dir = base_dir_of(path);
    let mut cx = FileCx::new(path, text);
    let mut rules = RuleSet::default();
    let (root, config) = parse_config(&mut cx, text);
    if let Some(config) = &config {
        load_rules_of(config, &root, &base_dir, &mut cx, &mut rules);
    }
    let mut diagnostics = cx.finish();
    diagnostics.extend(rules.diagnostics);
    let loaded = config.map(|config| LoadedConfig {
        config,
        rules: rules.rules,
        base_dir,
    });
    (loaded, diagnostics)
}

/// The problems of a failed load; never empty, so a failure always says something.
fn failed(path: &Path, mut diagnostics: Vec<Diagnostic>) -> Diagnostics {
    if diagnostics.is_empty() {
        diagnostics.push(Diagnostic::whole_file(path, "not a valid citybrain config"));
    }
    Diagnostics(diagnostics)
}

/// Loads the main config file at `path` and every rule file it lists. Either everything is
/// valid, or every problem found in any of the files is returned.
pub fn load(path: &Path) -> Result<LoadedConfig, Diagnostics> {
    let text = read(path, "config file").map_err(|d| Diagnostics(vec![d]))?;
    match load_text(path, &text) {
        (Some(loaded), diagnostics) if diagnostics.is_empty() => Ok(loaded),
        (_, diagnostics) => Err(failed(path, diagnostics)),
    }
}

/// Parses and checks a main config given as text (its rule files are not read). `path` is
/// only used in diagnostics. For tests and the demo.
pub fn load_str(path: &Path, text: &str) -> Result<Config, Diagnostics> {
    let mut cx = FileCx::new(path, text);
    let (_, config) = parse_config(&mut cx, text);
    match config {
        Some(config) => Diagnostics(cx.finish()).into_result(config),
        None => Err(failed(path, cx.finish())),
    }
}

/// Compiles one rule file given as text. `path` is only used in diagnostics.
pub fn load_rules_str(path: &Path, text: &str) -> Result<Vec<RuleRow>, Diagnostics> {
    let mut rules = RuleSet::default();
    rules.add_text(path, text);
    rules.finish()
}

/// Compiles several rule files loaded together (ids unique across all of them), e.g. to reload
/// [`LoadedConfig::rule_files`] after one changed.
pub fn load_rule_files(paths: &[PathBuf]) -> Result<Vec<RuleRow>, Diagnostics> {
    let mut rules = RuleSet::default();
    for path in paths {
        match read(path, "rule file") {
            Ok(text) => rules.add_text(path, &text),
            Err(d) => rules.diagnostics.push(d),
        }
    }
    rules.finish()
}

/// True when `text` looks like a rule file: it has a top-level `rule` key.
fn is_rule_file(text: &str) -> bool {
    let (root, _) = toml::de::DeTable::parse_recoverable(text);
    root.get_ref().contains_key("rule")
}

/// True when `text` looks like a replay mapping file: top-level `file` and `time` keys.
fn is_mapping_file(text: &str) -> bool {
    let (root, _) = toml::de::DeTable::parse_recoverable(text);
    let root = root.get_ref();
    root.contains_key("file") && root.contains_key("time")
}

/// Checks files for `citybrain validate FILE...`: a file with `[[rule]]` tables is a rule file,
/// one with `file` and `[time]` a replay mapping file, any other a main config (whose rule
/// files are checked too). Rule files given directly share
/// one id space. Returns every problem found; empty when all files are valid.
pub fn validate_files(paths: &[PathBuf]) -> Diagnostics {
    let mut out = Vec::new();
    let mut rules = RuleSet::default();
    for path in paths {
        let text = match read(path, "file") {
            Ok(text) => text,
            Err(d) => {
                out.push(d);
                continue;
            }
        };
        if is_rule_file(&text) {
            rules.add_text(path, &text);
        } else if is_mapping_file(&text) {
            if let Err(d) = load_mapping_str(path, &text) {
                out.extend(d.0);
            }
        } else {
            out.extend(load_text(path, &text).1);
        }
    }
    out.extend(rules.diagnostics);
    Diagnostics(dedup(out))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use citybrain_model::{Domain, Metric, Severity};
    use citybrain_operators::rule::Direction;

    use super::*;

    fn examples_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent()
            && let Err(e) = fs::create_dir_all(parent)
        {
            panic!("cannot create {}: {e}", parent.display());
        }
        if let Err(e) = fs::write(&path, text) {
            panic!("cannot write {}: {e}", path.display());
        }
        path
    }

    fn tempdir() -> tempfile::TempDir {
        match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("no temp dir: {e}"),
        }
    }

    #[test]
    fn the_example_files_are_valid() {
        let loaded = match load(&examples_dir().join("citybrain.toml")) {
            Ok(loaded) => loaded,
            Err(all) => panic!("the example config is invalid:\n{all}"),
        };
        assert_eq!(loaded.config.rules.files.len(), 3);
        assert!(loaded.rule_files().iter().all(|f| f.exists()));
        let find = |id: &str| {
            loaded
                .rules
                .iter()
                .find(|r| r.id() == id)
                .and_then(|r| r.as_threshold())
                .cloned()
        };
        let mine: Vec<_> = loaded
            .rules
            .iter()
            .filter(|r| r.domain() == Domain::Mine)
            .collect();
        let farm: Vec<_> = loaded
            .rules
            .iter()
            .filter(|r| r.domain() == Domain::Farm)
            .collect();
        assert_eq!(mine.len(), 10);
        assert_eq!(farm.len(), 6);
        let kinds: Vec<&str> = loaded.rules.iter().map(|r| r.kind()).collect();
        for kind in [
            "threshold",
            "window",
            "rate_of_rise",
            "baseline",
            "correlation",
            "absence",
        ] {
            assert!(kinds.contains(&kind), "no example of kind {kind}");
        }
        let alarm = find("ch4-alarm")
            .map(|r| (r.metric, r.direction, r.threshold.0, r.clear.0, r.severity));
        assert_eq!(
            alarm,
            Some((Metric::Ch4, Direction::Above, 1.0, 0.9, Severity::Critical))
        );
        let irrigation =
            find("irrigation-needed").map(|r| (r.direction, r.threshold.0, r.clear.0, r.hold_ms));
        assert_eq!(irrigation, Some((Direction::Below, 15.0, 18.0, 30_000)));
        assert!(validate_files(&[examples_dir().join("citybrain.toml")]).is_empty());
        assert!(
            validate_files(&[
                examples_dir().join("rules/mine.toml"),
                examples_dir().join("rules/farm.toml"),
                examples_dir().join("rules/citizen.toml")
            ])
            .is_empty()
        );
    }

    #[test]
    fn load_resolves_rule_files_against_the_config_dir() {
        let dir = tempdir();
        let config = write(
            dir.path(),
            "etc/citybrain.toml",
            "[kafka]\nbrokers = \"b:9092\"\n[rules]\nfiles = [\"rules/a.toml\"]\n[outputs]\nalerts_file = \"out/alerts.jsonl\"\n",
        );
        write(
            dir.path(),
            "etc/rules/a.toml",
            "[[rule]]\nid = \"a\"\ndomain = \"mine\"\nmetric = \"ch4\"\nabove = 1.0\n",
        );
        let loaded = match load(&config) {
            Ok(loaded) => loaded,
            Err(all) => panic!("{all}"),
        };
        assert_eq!(loaded.base_dir, dir.path().join("etc"));
        assert_eq!(loaded.rules.len(), 1);
        assert_eq!(
            loaded.alerts_file(),
            Some(dir.path().join("etc/out/alerts.jsonl"))
        );
        assert_eq!(
            loaded.rule_files(),
            vec![dir.path().join("etc/rules/a.toml")]
        );
        assert_eq!(
            load_rule_files(&loaded.rule_files()).map(|r| r.len()),
            Ok(1)
        );
    }

    #[test]
    fn problems_of_all_files_are_reported_together() {
        let dir = tempdir();
        let config = write(
            dir.path(),
            "citybrain.toml",
            "[engine]\nworkers = 0\n[rules]\nfiles = [\n  \"rules/a.toml\",\n  \"rules/missing.toml\",\n  \"rules/b.toml\",\n]\n",
        );
        write(
            dir.path(),
            "rules/a.toml",
            "[[rule]]\nid = \"ch4\"\ndomain = \"mine\"\nmetric = \"ch4\"\nabove = 1.0\n[[rule]]\nid = \"x\"\ndomain = \"mine\"\nmetric = \"ch4\"\nbelow = 1\nabove = 2\n",
        );
        write(
            dir.path(),
            "rules/b.toml",
            "[[rule]]\nid = \"ch4\"\ndomain = \"farm\"\nmetric = \"humidity\"\nabove = 95\n",
        );
        let all = match load(&config) {
            Ok(loaded) => panic!("expected errors, got {loaded:?}"),
            Err(all) => all,
        };
        let found: Vec<String> = all
            .iter()
            .map(|d| {
                let file = d
                    .file
                    .strip_prefix(dir.path())
                    .unwrap_or(&d.file)
                    .display()
                    .to_string();
                format!("{file}:{}:{}: {}", d.line, d.column, d.message)
            })
            .collect();
        let a = dir.path().join("rules/a.toml");
        assert_eq!(
            found,
            vec![
                "citybrain.toml:2:11: `engine.workers` must be at least 1".to_string(),
                format!("citybrain.toml:6:3: rule file `{}` not found", dir.path().join("rules/missing.toml").display()),
                "rules/a.toml:11:9: a threshold rule has exactly one of `above` and `below`, this one has both".to_string(),
                format!("rules/b.toml:2:6: duplicate rule id `ch4` (first defined at {}:2:6)", a.display()),
            ]
        );
        // `validate` finds the same problems, once, however the files are named.
        let direct = validate_files(&[config.clone(), a.clone(), dir.path().join("rules/b.toml")]);
        assert_eq!(direct.len(), 4, "{direct}");
        let missing = validate_files(&[dir.path().join("nope.toml")]);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing.0[0].line, 0);
    }

    #[test]
    fn rule_files_listed_twice() {
        let dir = tempdir();
        let config = write(
            dir.path(),
            "c.toml",
            "[rules]\nfiles = [\"a.toml\", \"./a.toml\", \"a.toml\"]\n",
        );
        write(dir.path(), "a.toml", "");
        let all = match load(&config) {
            Ok(loaded) => panic!("expected errors, got {loaded:?}"),
            Err(all) => all,
        };
        let found: Vec<(usize, usize, String)> = all
            .iter()
            .map(|d| (d.line, d.column, d.message.clone()))
            .collect();
        assert_eq!(
            found,
            vec![
                (2, 20, "rule file `./a.toml` is listed twice".to_string()),
                (2, 32, "rule file `a.toml` is listed twice".to_string())
            ]
        );
    }

    #[test]
    fn load_str_reports_positions_in_the_named_file() {
        let all = match load_str(Path::new("demo.toml"), "[engine]\nworkers = \"two\"\n") {
            Ok(config) => panic!("expected errors, got {config:?}"),
            Err(all) => all,
        };
        assert_eq!(
            all.to_string(),
            "demo.toml:2:11: error: `engine.workers` must be a non-negative integer, found string \"two\""
        );
    }

    #[test]
    fn odd_input_gives_positioned_errors_not_panics() {
        let configs = [
            "[[sources]]\ntopic = 1\n[engine]\nworkers = 99999999999999999999999\n",
            "[engine\nworkers = 3\n[kafka]\nbrokers = 5\n",
            "engine = 5\nkafka = { brokers = \"x\", extra = 1 }\n[rules]\nfiles = \"a.toml\"\n",
            "[sources]\nmine = \"x\"\n[outputs]\nalerts_file = 3\n",
            "\u{feff}[engine]\nworkers = -1\n",
            "= = =\n[[[\n\"",
        ];
        for text in configs {
            match load_str(Path::new("c.toml"), text) {
                Ok(config) => panic!("expected errors for {text:?}, got {config:?}"),
                Err(all) => assert!(all.iter().all(|d| d.line >= 1 && d.column >= 1), "{all}"),
            }
        }
        let rule_files = [
            "[[rule]]\nid = \"a\"\nabove =\nmetric = \"ch4\"\n\n[[rule]]\nid = \"b\nabove = 2\n",
            "rule = 5",
            "[[rule]]\n[[rule]]\nid = 3\nkind = 4\ndomain = \"farm\"\nscope = [1]\nlabels = \"x\"\n",
            "[[rule]]\nid = \"x\"\ndomain = \"citizen\"\nmetric = \"ch4\"\nabove = 1\n[[rule.scope]]\n",
            "[[rule]]\nid = \"x\"\n[rule.labels]\na.b.c = 1\n",
        ];
        for text in rule_files {
            match load_rules_str(Path::new("r.toml"), text) {
                Ok(rules) => panic!("expected errors for {text:?}, got {rules:?}"),
                Err(all) => assert!(all.iter().all(|d| d.line >= 1 && d.column >= 1), "{all}"),
            }
        }
        // An array of tables where a table is expected is reported once, at its header.
        let all = load_rules_str(
            Path::new("r.toml"),
            "[[rule]]\nid = \"x\"\ndomain = \"mine\"\nmetric = \"ch4\"\nabove = 1\n[[rule.scope]]\n",
        );
        let found = all.map_err(|all| all.iter().map(|d| (d.line, d.column)).collect::<Vec<_>>());
        assert_eq!(found, Err(vec![(6, 1)]));
    }
}
