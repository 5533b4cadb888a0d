//! Rule and KPI cases as data: each directory under `tests/scenarios/rules/` holds a rule file,
//! input events and the exact alert transitions (and optionally KPI values) the engine's own
//! dataflow must produce from them, run through `citybrain replay`'s path (no Kafka, so every
//! case is deterministic and takes well under a second). `tests/scenarios/rules/README.md`
//! describes the files; a new case is a new directory. `CITYBRAIN_BLESS=1` writes what the
//! engine produced instead of comparing (to review by hand before committing).

#![allow(clippy::expect_used)] // a case that cannot be read fails the test

use std::path::{Path, PathBuf};

use citybrain_engine::config::{self, LoadedConfig};
use citybrain_engine::replay;
use serde_json::{Value, json};

/// The config of a case without `config.toml`: one second of lateness for every source,
/// two workers (so keys are exchanged as in production).
const DEFAULT_CONFIG: &str = r#"
[engine]
workers = 2

[sources.mine]
allowed_lateness = "1s"

[sources.farm]
allowed_lateness = "1s"

[sources.citizen]
allowed_lateness = "1s"
"#;

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/rules");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/scenarios/rules")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("events.jsonl").is_file())
        .collect();
    cases.sort();
    cases
}

/// What a case produced: its transitions as `expected-alerts.jsonl` lines, and the final
/// values of the KPIs `kpis` names (all of them when `None`).
fn run_case(case: &Path, kpis: Option<&Value>) -> (Vec<Value>, Value) {
    let name = case.display();
    let config_text = std::fs::read_to_string(case.join("config.toml"))
        .unwrap_or_else(|_| DEFAULT_CONFIG.to_string());
    let rules_path = case.join("rules.toml");
    let rules_text =
        std::fs::read_to_string(&rules_path).unwrap_or_else(|e| panic!("{name}: rules.toml: {e}"));
    let loaded = LoadedConfig {
        config: config::load_str(&case.join("config.toml"), &config_text)
            .unwrap_or_else(|d| panic!("{name}: {d}")),
        rules: config::load_rules_str(&rules_path, &rules_text)
            .unwrap_or_else(|d| panic!("{name}: {d}")),
        base_dir: case.to_path_buf(),
    };
    let settings = replay::settings(&loaded, None).expect("settings");
    let input = case.join("events.jsonl").display().to_string();
    let schedule = replay::schedule(&loaded, &[input], settings.lateness)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        schedule.dead_letters.is_empty(),
        "{name}: events that do not decode: {:?}",
        schedule.dead_letters
    );
    let run = replay::run(
        &schedule,
        &settings,
        &loaded.rules,
        &indicatif::ProgressBar::hidden(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let alerts = run
        .transitions
        .iter()
        .map(|t| {
            let mut line = json!({
                "at": t.event_time_rfc3339,
                "rule": t.rule,
                "entity": t.entity,
                "state": t.state.as_str(),
                "value": t.value,
            });
            // Citizen alerts are routed by their level: part of what a case fixes.
            if let (Some(level), Some(fields)) = (t.labels.get("level"), line.as_object_mut()) {
                fields.insert("level".into(), json!(level));
            }
            line
        })
        .collect();
    let values = serde_json::to_value(&run.kpis.values).expect("json");
    let kpis = match kpis.and_then(Value::as_object) {
        Some(wanted) => Value::Object(
            wanted
                .keys()
                .map(|k| (k.clone(), values.get(k).cloned().unwrap_or(Value::Null)))
                .collect(),
        ),
        None => values,
    };
    (alerts, kpis)
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

fn lines(values: &[Value]) -> String {
    values.iter().map(|v| format!("{v}\n")).collect()
}

#[test]
fn rule_scenarios() {
    let bless = std::env::var_os("CITYBRAIN_BLESS").is_some();
    let cases = cases();
    assert!(cases.len() >= 5, "{} cases", cases.len());
    let mut failed = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap_or_default().to_string_lossy();
        let kpi_path = case.join("expected-kpis.json");
        let wanted: Option<Value> = std::fs::read_to_string(&kpi_path)
            .ok()
            .map(|t| serde_json::from_str(&t).unwrap_or_else(|e| panic!("{name}: {e}")));
        let (alerts, kpis) = run_case(case, wanted.as_ref());
        let alerts_path = case.join("expected-alerts.jsonl");
        if bless {
            std::fs::write(&alerts_path, lines(&alerts)).expect("write");
            if wanted.is_some() {
                let mut text = serde_json::to_string_pretty(&kpis).expect("json");
                text.push('\n');
                std::fs::write(&kpi_path, text).expect("write");
            }
            continue;
        }
        let expected = read_lines(&alerts_path);
        if alerts != expected {
            failed.push(format!(
                "{name}: alerts: expected\n{}got\n{}",
                lines(&expected),
                lines(&alerts)
            ));
        }
        if let Some(wanted) = wanted
            && kpis != wanted
        {
            failed.push(format!("{name}: KPIs: expected {wanted}, got {kpis}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
