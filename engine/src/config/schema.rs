//! JSON Schemas of the config files, generated from the config types themselves, so editors
//! (e.g. Taplo / Even Better TOML with `#:schema ./schema/citybrain.schema.json`) can complete
//! and check them.
//!
//! Three schemas (JSON Schema draft 7), checked in under `config/schema/` and regenerated with
//! `citybrain schema`:
//!
//! | file | describes |
//! |---|---|
//! | `citybrain.schema.json` | the main config file ([`Config`](super::Config), `[dispatch]` included) |
//! | `rules.schema.json` | rule files: `[[rule]]` tables, one `oneOf` branch per rule kind |
//! | `kpis.schema.json` | KPI files: `[[kpi]]` tables |
//! | `replay.schema.json` | replay mapping files (`config/replay/`) |
//!
//! The schemas describe the shape of the files (fields, types, enumerations, defaults, unknown
//! fields); what depends on several fields or on the domain (e.g. exactly one of `above` /
//! `below`, the metrics of a domain) is left to `citybrain validate`.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde_json::Value;

use super::Config;
use super::kpis::KpiTable;
use super::mapping::MappingFile;
use super::rules::RuleTable;

/// Where the generated schemas are checked in, relative to the workspace root.
pub const SCHEMA_DIR: &str = "config/schema";

/// File name of the main config's schema.
pub const CONFIG_SCHEMA_FILE: &str = "citybrain.schema.json";

/// File name of the rule files' schema.
pub const RULES_SCHEMA_FILE: &str = "rules.schema.json";

/// File name of the KPI files' schema.
pub const KPIS_SCHEMA_FILE: &str = "kpis.schema.json";

/// File name of the replay mapping files' schema.
pub const REPLAY_SCHEMA_FILE: &str = "replay.schema.json";

/// A rule file as written: only `[[rule]]` tables.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "citybrain rule file",
    description = "A rule file: `[[rule]]` tables, each one rule; `kind` (default \"threshold\") selects the fields."
)]
#[allow(dead_code)] // describes the file for its schema only; rule files are read by `rules`
struct RuleFile {
    /// The rules.
    #[serde(default)]
    rule: Vec<RuleTable>,
}

/// A KPI file as written: only `[[kpi]]` tables.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "citybrain KPI file",
    description = "A KPI file: `[[kpi]]` tables, each one KPI the engine maintains."
)]
#[allow(dead_code)] // describes the file for its schema only; KPI files are read by `kpis`
struct KpiFile {
    /// The KPIs.
    #[serde(default)]
    kpi: Vec<KpiTable>,
}

/// The schema of `T` as a whole file (draft 7, definitions under `definitions`), tidied.
fn file_schema<T: JsonSchema>(title: &str) -> Value {
    let schema: Schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<T>();
    let mut value = schema.to_value();
    if let Value::Object(root) = &mut value {
        root.insert("title".to_string(), Value::String(title.to_string()));
    }
    tidy(&mut value);
    value
}

/// `text` of a doc comment with the line breaks inside paragraphs removed (they only wrap
/// the source), so editors can wrap descriptions to their own width.
fn unwrapped(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| paragraph.split('\n').collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Removes what does not belong in the schema of a TOML file: `null` (TOML has none, a missing
/// key is how a value is left out), defaults that only restate a whole section's defaults
/// (each field has its own), and the machine-dependent default of `engine.workers`; unwraps
/// descriptions.
fn tidy(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(description)) = object.get_mut("description") {
                *description = unwrapped(description);
            }
            if let Some(Value::Object(engine)) = object.get_mut("EngineConfig")
                && let Some(Value::Object(properties)) = engine.get_mut("properties")
                && let Some(Value::Object(workers)) = properties.get_mut("workers")
            {
                workers.remove("default");
            }
            if matches!(object.get("default"), Some(Value::Null | Value::Object(_))) {
                object.remove("default");
            }
            if let Some(Value::Array(types)) = object.get_mut("type") {
                types.retain(|t| t != "null");
                if let [single] = types.as_slice() {
                    let single = single.clone();
                    object.insert("type".to_string(), single);
                }
            }
            for key in ["anyOf", "oneOf"] {
                if let Some(Value::Array(branches)) = object.get_mut(key) {
                    branches.retain(|b| b.get("type").and_then(Value::as_str) != Some("null"));
                }
            }
            for child in object.values_mut() {
                tidy(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}

/// The config schemas: `(file name, pretty JSON ending in a newline)` for each file of
/// [`SCHEMA_DIR`].
pub fn generate() -> Vec<(&'static str, String)> {
    [
        (
            CONFIG_SCHEMA_FILE,
            file_schema::<Config>("citybrain config"),
        ),
        (
            RULES_SCHEMA_FILE,
            file_schema::<RuleFile>("citybrain rule file"),
        ),
        (
            KPIS_SCHEMA_FILE,
            file_schema::<KpiFile>("citybrain KPI file"),
        ),
        (
            REPLAY_SCHEMA_FILE,
            file_schema::<MappingFile>("citybrain replay mapping file"),
        ),
    ]
    .into_iter()
    .map(|(name, schema)| (name, format!("{schema:#}\n")))
    .collect()
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn config_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
    }

    fn schema_of(name: &str) -> Value {
        let Some((_, text)) = generate().into_iter().find(|(file, _)| *file == name) else {
            panic!("no schema {name}");
        };
        match serde_json::from_str(&text) {
            Ok(schema) => schema,
            Err(e) => panic!("{name} is not JSON: {e}"),
        }
    }

    #[test]
    fn checked_in_schemas_are_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(SCHEMA_DIR);
        for (name, generated) in generate() {
            let path = dir.join(name);
            let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                checked_in == generated,
                "{} is stale or missing: the config types changed. Regenerate the schemas with \
                 `cargo run -p citybrain-engine --bin citybrain -- schema` and commit them.",
                path.display()
            );
        }
    }

    #[test]
    fn the_rule_schema_has_one_branch_per_kind() {
        let schema = schema_of(RULES_SCHEMA_FILE);
        let definitions = &schema["definitions"];
        let Some(branches) = definitions["Rule"]["oneOf"].as_array() else {
            panic!("no oneOf in {schema:#}");
        };
        let kinds: Vec<&str> = branches
            .iter()
            .filter_map(|branch| branch["$ref"].as_str())
            .filter_map(|reference| reference.strip_prefix("#/definitions/"))
            .filter_map(|name| definitions[name]["properties"]["kind"]["const"].as_str())
            .collect();
        assert_eq!(kinds, super::super::rules::kind_names());
    }

    /// A TOML file as the JSON value a schema validates.
    fn toml_as_json(path: &Path) -> Value {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        };
        match toml::from_str::<Value>(&text) {
            Ok(value) => value,
            Err(e) => panic!("{} is not TOML: {e}", path.display()),
        }
    }

    fn problems(schema: &Value, path: &Path) -> Vec<String> {
        let validator = match jsonschema::validator_for(schema) {
            Ok(validator) => validator,
            Err(e) => panic!("the schema of {} is invalid: {e}", path.display()),
        };
        let instance = toml_as_json(path);
        validator
            .iter_errors(&instance)
            .map(|e| format!("{}: {}: {e}", path.display(), e.instance_path()))
            .collect()
    }

    #[test]
    fn the_example_configs_validate_against_the_schemas() {
        let dir = config_dir();
        let cases = [
            (CONFIG_SCHEMA_FILE, "citybrain.toml"),
            (CONFIG_SCHEMA_FILE, "demo.toml"),
            (CONFIG_SCHEMA_FILE, "dispatch.example.toml"),
            (RULES_SCHEMA_FILE, "rules/mine.toml"),
            (RULES_SCHEMA_FILE, "rules/farm.toml"),
            (RULES_SCHEMA_FILE, "rules/citizen.toml"),
            (KPIS_SCHEMA_FILE, "kpis.toml"),
            (REPLAY_SCHEMA_FILE, "replay/methane.toml"),
            (REPLAY_SCHEMA_FILE, "replay/la311.toml"),
            (REPLAY_SCHEMA_FILE, "replay/greenhouse-climate.toml"),
            (REPLAY_SCHEMA_FILE, "replay/greenhouse-water.toml"),
            (REPLAY_SCHEMA_FILE, "replay/greenhouse-soil-temp.toml"),
            (REPLAY_SCHEMA_FILE, "replay/cows.toml"),
            (REPLAY_SCHEMA_FILE, "replay/seismic-bumps.toml"),
        ];
        let all: Vec<String> = cases
            .iter()
            .flat_map(|(schema, file)| problems(&schema_of(schema), &dir.join(file)))
            .collect();
        assert!(all.is_empty(), "{}", all.join("\n"));
    }

    #[test]
    fn the_schemas_reject_what_the_loader_rejects() {
        let config = schema_of(CONFIG_SCHEMA_FILE);
        let rules = schema_of(RULES_SCHEMA_FILE);
        let invalid = |schema: &Value, toml_text: &str| {
            let instance = match toml::from_str::<Value>(toml_text) {
                Ok(value) => value,
                Err(e) => panic!("not TOML: {e}"),
            };
            match jsonschema::validator_for(schema) {
                Ok(validator) => !validator.is_valid(&instance),
                Err(e) => panic!("invalid schema: {e}"),
            }
        };
        // Unknown fields, wrong types, bad durations and unknown enum values.
        assert!(invalid(&config, "[engine]\nwrokers = 2\n"));
        assert!(invalid(&config, "[sources.mien]\ntopic = \"x\"\n"));
        assert!(invalid(&config, "[reload]\ndebounce = 200\n"));
        assert!(invalid(&config, "[reload]\ndebounce = \"soon\"\n"));
        assert!(invalid(&config, "[dispatch]\nfsync = \"sometimes\"\n"));
        assert!(!invalid(&config, "[recovery]\ncitizen_history = \"7d\"\n"));
        // A rule without kind is a threshold rule; other kinds take only their own fields.
        let threshold = "[[rule]]\nid = \"a\"\ndomain = \"mine\"\nmetric = \"ch4\"\nabove = 1.0\n";
        assert!(!invalid(&rules, threshold));
        assert!(invalid(
            &rules,
            &format!("{threshold}aggregate = \"avg\"\n")
        ));
        assert!(invalid(
            &rules,
            "[[rule]]\nid = \"a\"\nkind = \"treshold\"\n"
        ));
        assert!(invalid(
            &rules,
            "[[rule]]\ndomain = \"mine\"\nmetric = \"ch4\"\n"
        ));
        assert!(!invalid(
            &rules,
            "[[rule]]\nid = \"w\"\nkind = \"window\"\ndomain = \"mine\"\nmetric = \"ch4\"\nwindow = \"2m\"\naggregate = \"avg\"\nabove = 1\n"
        ));
    }
}
