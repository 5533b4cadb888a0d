//! KPI files: `[[kpi]]` tables, each compiled to a [`KpiDef`] maintained by the dataflow.
//!
//! ```toml
//! [[kpi]]
//! name = "open_backlog"          # required, unique; the key in /api/kpis and the gauge label
//! title = "Open citizen reports" # optional, for people
//! source = "reports"             # readings | latest | alerts | reports | report_events
//! filter = { status = "open" }   # optional: rows must carry these labels ("*": any value)
//! group_by = "district"          # optional: one value per distinct label value
//! aggregate = "count"            # count | distinct_count | sum | avg | min | max | p50 | p90 | p99 | ratio | rate_per_minute
//! field = "face"                 # distinct_count: the label whose distinct values are counted
//! numerator = { status = "resolved" }  # ratio: the share of rows carrying these labels
//! window = "24h"                 # readings and report_events: how long an event counts (required there)
//! ```
//!
//! Every table is checked on its own and every problem reported, with file:line:column.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use citybrain_model::Labels;
use citybrain_operators::kpi::{Aggregate, KpiDef, KpiSource};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::DeValue;

use super::de::{Seg, deserialize_all, parse_document, root_table, value_at};
use super::diagnostic::{Diagnostics, FileCx, one_of_hint};
use super::duration;

/// The aggregate names of `aggregate = "..."`.
const AGGREGATES: [&str; 11] = [
    "count",
    "distinct_count",
    "sum",
    "avg",
    "min",
    "max",
    "p50",
    "p90",
    "p99",
    "ratio",
    "rate_per_minute",
];

/// One `[[kpi]]` table as written.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Kpi", description = "One KPI maintained by the engine.")]
pub(crate) struct KpiTable {
    /// Required, unique: the key in `/api/kpis` and the gauge label.
    #[schemars(required)]
    name: Option<String>,
    /// A title for people. Optional.
    #[serde(default)]
    #[allow(dead_code)] // shown by the wall page through the config, not used by the dataflow
    title: Option<String>,
    /// Required: where the rows come from: `readings`, `latest`, `alerts`, `reports` or
    /// `report_events`.
    #[schemars(
        required,
        with = "String",
        extend("enum" = ["readings", "latest", "alerts", "reports", "report_events"])
    )]
    source: Option<KpiSource>,
    /// Rows must carry these labels (`"*"`: any value). Default: none.
    #[serde(default)]
    filter: BTreeMap<String, String>,
    /// One value per distinct value of this label. Default: one value in all.
    group_by: Option<String>,
    /// Required: `count`, `distinct_count`, `sum`, `avg`, `min`, `max`, `p50`, `p90`, `p99`,
    /// `ratio` or `rate_per_minute`.
    #[schemars(required, extend("enum" = AGGREGATES))]
    aggregate: Option<String>,
    /// `distinct_count`: the label whose distinct values are counted.
    field: Option<String>,
    /// `ratio`: the share of rows carrying these labels. Default: none.
    #[serde(default)]
    numerator: BTreeMap<String, String>,
    /// `readings` and `report_events` (required there): how long an event counts.
    #[serde(default, with = "duration::option")]
    #[schemars(with = "Option<duration::DurationString>")]
    window: Option<Duration>,
}

fn labels(map: BTreeMap<String, String>) -> Labels {
    map.into_iter().collect()
}

/// Compiles the KPI file `text` (read from `path`).
pub fn load_kpis_str(path: &Path, text: &str) -> Result<Vec<KpiDef>, Diagnostics> {
    let mut cx = FileCx::new(path, text);
    let root = parse_document(&mut cx, text);
    let mut defs = Vec::new();
    let mut first_seen: HashMap<String, String> = HashMap::new();
    if let Some(table) = root_table(&root) {
        for (key, value) in table.iter() {
            if key.get_ref() != "kpi" {
                cx.error(
                    key.span(),
                    format!("unknown top-level key `{}` in a KPI file", key.get_ref()),
                    Some("a KPI file holds only [[kpi]] tables".to_string()),
                );
                continue;
            }
            let DeValue::Array(items) = value.get_ref() else {
                cx.error(
                    value.span(),
                    "`kpi` must be an array of tables",
                    Some("start each KPI with a [[kpi]] line (two brackets)".to_string()),
                );
                continue;
            };
            for item in items.iter() {
                if let Some(def) = compile(&mut cx, item.clone(), &mut first_seen) {
                    defs.push(def);
                }
            }
        }
    }
    let diagnostics = cx.finish();
    if diagnostics.is_empty() {
        Ok(defs)
    } else {
        Err(Diagnostics(diagnostics))
    }
}

fn compile(
    cx: &mut FileCx<'_>,
    item: Spanned<DeValue<'_>>,
    first_seen: &mut HashMap<String, String>,
) -> Option<KpiDef> {
    let whole = item.span();
    let span = |key: &str| {
        value_at(&item, &[Seg::Key(key.to_string())]).map_or(whole.clone(), Spanned::span)
    };
    let table: KpiTable = deserialize_all(cx, item.clone(), "kpi")?;
    let mut ok = true;
    let name = match table.name {
        Some(name) if !name.trim().is_empty() => name,
        _ => {
            cx.error(
                whole.clone(),
                "every [[kpi]] needs a non-empty `name`",
                None,
            );
            return None;
        }
    };
    if let Some(first) = first_seen.get(&name) {
        cx.error(
            span("name"),
            format!("duplicate KPI name `{name}` (first defined at {first})"),
            None,
        );
        ok = false;
    } else {
        first_seen.insert(name.clone(), cx.location(&span("name")));
    }
    let Some(source) = table.source else {
        cx.error(
            whole,
            format!("KPI `{name}` needs a `source`"),
            Some("one of: readings, latest, alerts, reports, report_events".into()),
        );
        return None;
    };
    let aggregate_name = table.aggregate.unwrap_or_default();
    let aggregate = match aggregate_name.as_str() {
        "count" => Some(Aggregate::Count),
        "distinct_count" => {
            match table.field {
                Some(field) => Some(Aggregate::DistinctCount(field)),
                None => {
                    cx.error(span("aggregate"), "`distinct_count` needs `field`: the label whose distinct values are counted", None);
                    None
                }
            }
        }
        "sum" => Some(Aggregate::Sum),
        "avg" => Some(Aggregate::Avg),
        "min" => Some(Aggregate::Min),
        "max" => Some(Aggregate::Max),
        "p50" => Some(Aggregate::Percentile(50)),
        "p90" => Some(Aggregate::Percentile(90)),
        "p99" => Some(Aggregate::Percentile(99)),
        "ratio" if table.numerator.is_empty() => {
            cx.error(
                span("aggregate"),
                "`ratio` needs `numerator`: the labels of the rows counted above the line",
                None,
            );
            None
        }
        "ratio" => Some(Aggregate::Ratio(labels(table.numerator))),
        "rate_per_minute" if table.window.is_none() => {
            cx.error(
                span("aggregate"),
                "`rate_per_minute` needs a `window`",
                None,
            );
            None
        }
        "rate_per_minute" => Some(Aggregate::RatePerMinute),
        other => {
            cx.error(
                span("aggregate"),
                format!("unknown aggregate `{other}`"),
                Some(one_of_hint(other, &AGGREGATES)),
            );
            None
        }
    };
    let window_ms = table
        .window
        .map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX));
    match (source.is_event_source(), window_ms) {
        (true, None) => {
            cx.error(
                span("source"),
                format!("KPI `{name}` reads an event source and needs a `window`"),
                Some("e.g. window = \"24h\": without one it would grow with every event".into()),
            );
            ok = false;
        }
        (false, Some(_)) => {
            cx.error(
                span("window"),
                "`window` applies to the event sources `readings` and `report_events` only",
                None,
            );
            ok = false;
        }
        (_, Some(0)) => {
            cx.error(span("window"), "`window` must be greater than zero", None);
            ok = false;
        }
        _ => {}
    }
    let aggregate = aggregate?;
    ok.then(|| KpiDef {
        name,
        source,
        filter: labels(table.filter),
        group_by: table.group_by,
        aggregate,
        window_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match load_kpis_str(Path::new("k.toml"), text) {
            Ok(_) => Vec::new(),
            Err(d) => {
                d.0.iter()
                    .map(|d| format!("{}:{} {}", d.line, d.column, d.message))
                    .collect()
            }
        }
    }

    #[test]
    fn the_built_in_kpis_load() {
        let defs = load_kpis_str(
            Path::new("config/kpis.toml"),
            include_str!("../../../config/kpis.toml"),
        )
        .unwrap_or_else(|d| panic!("{d}"));
        assert!(
            defs.iter()
                .any(|d| d.name == "open_backlog" && d.group_by.as_deref() == Some("district"))
        );
        assert!(defs.iter().any(|d| d.name == "closure_rate"));
    }

    #[test]
    fn every_error_with_its_position() {
        let text = r#"
[[kpi]]
name = "a"
source = "reports"
aggregate = "median"

[[kpi]]
name = "a"
source = "report_events"
aggregate = "count"

[[kpi]]
name = "c"
source = "latest"
aggregate = "distinct_count"
window = "1h"
colour = "red"
"#;
        assert_eq!(
            errors(text),
            vec![
                "5:13 unknown aggregate `median`",
                "8:8 duplicate KPI name `a` (first defined at k.toml:3:8)",
                "9:10 KPI `a` reads an event source and needs a `window`",
                "15:13 `distinct_count` needs `field`: the label whose distinct values are counted",
                "16:10 `window` applies to the event sources `readings` and `report_events` only",
                "17:1 unknown field `kpi.colour`",
            ]
        );
    }
}
