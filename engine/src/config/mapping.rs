//! Replay mapping files: how the rows of a recorded CSV or ARFF file become citybrain events
//! for `citybrain replay` (see `config/replay/` for one per data set in `../shared/data/`).
//!
//! ```toml
//! file = "../../../shared/data/greenhouse/TRH_1.csv"  # relative to this file
//! format = "csv"                 # csv | arff; default: from the file's extension
//! skip_lines = 0                 # csv: lines before the header line
//! delimiter = ","                # csv: one character
//!
//! [time]                         # when each row happened: columns with a format ...
//! columns = ["Timestamp"]        # several are joined with one space (a date and a time column)
//! format = "%d/%m/%Y %H:%M:%S"   # chrono strftime; default: RFC 3339 or epoch milliseconds
//! time_zone = "Europe/Rome"      # IANA name; default: UTC
//! # ... or a fixed cadence for files without timestamps: row i is at start + i * cadence
//! # cadence = "30s"
//! # start = "2026-11-01T00:00:00Z"
//!
//! [[readings]]                   # one reading per row and table
//! column = "Temperature (°C)"    # the value
//! metric = "air_temp"            # the domain follows from the metric
//! entity = "it-tunnel/gh-1/air-temp"   # templates: {column} is the row's value of column
//!
//! [[reports]]                    # citizen report events: one per row and event
//! id = "LA-{srnumber}"
//! category = "{requesttype}"
//! grid = "la/cd-{cd}/nc-{nc}"
//! events = [{ kind = "created", columns = ["createddate"] }]   # empty cells: no event
//!
//! [[registry]]                   # reference data, loaded before any event
//! topic = "sensors"              # sensors | devices | grids
//! key = "it-tunnel/gh-1/air-temp" # with a {column}: one record per distinct key in the rows
//! value = { farm = "it-tunnel", greenhouse = "it-tunnel/gh-1", kind = "air_temp", cadence_ms = 900000 }
//! ```
//!
//! Every problem is reported at once with file:line:column, like the other config files.
//! Columns the templates name are checked against the data file's header when it is read.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use citybrain_model::registry::RegistryKind;
use citybrain_model::{Domain, Metric, ReportKind};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::DeValue;

use super::de::{Seg, deserialize_all, parse_document, value_at};
use super::diagnostic::{Diagnostic, Diagnostics, FileCx, one_of_hint};
use super::duration;

/// A mapping file as written.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "ReplayMapping",
    description = "How the rows of a recorded CSV or ARFF file become citybrain events."
)]
pub(crate) struct MappingFile {
    /// Required: the data file, relative to the mapping file (`citybrain replay --input
    /// MAPPING=DATA` overrides it).
    #[schemars(required)]
    file: Option<PathBuf>,
    /// `csv` or `arff`. Default: from the data file's extension.
    format: Option<DataFormat>,
    /// CSV: lines before the header line (metadata). Default: 0.
    #[serde(default)]
    skip_lines: usize,
    /// CSV: the field delimiter, one character. Default: ",".
    delimiter: Option<String>,
    /// Required: when each row happened.
    #[schemars(required)]
    time: Option<TimeTable>,
    /// Readings, one per row and table. Default: none.
    #[serde(default)]
    readings: Vec<ReadingTable>,
    /// Citizen report events. Default: none.
    #[serde(default)]
    reports: Vec<ReportTable>,
    /// Reference data loaded before any event. Default: none.
    #[serde(default)]
    registry: Vec<RegistryTable>,
}

/// The format of a data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// Comma-separated values with a header line.
    Csv,
    /// Weka's attribute-relation file format: `@attribute` lines name the columns, rows follow
    /// `@data`.
    Arff,
}

/// `[time]` as written.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TimeTable {
    /// The columns holding each row's time, joined with one space. Either this or `cadence`.
    #[serde(default)]
    columns: Vec<String>,
    /// chrono strftime format of the joined columns, e.g. `"%d/%m/%Y %H:%M:%S"`.
    /// Default: RFC 3339 or epoch milliseconds.
    format: Option<String>,
    /// IANA time zone of times without an offset, e.g. `"Europe/Rome"`. Default: UTC.
    time_zone: Option<String>,
    /// Files without timestamps: the time between rows. Either this or `columns`.
    #[serde(default, with = "duration::option")]
    #[schemars(with = "Option<duration::DurationString>")]
    cadence: Option<Duration>,
    /// With `cadence` (required there): the first row's time, RFC 3339.
    start: Option<String>,
}

/// `[[readings]]` as written.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReadingTable {
    /// Required: the column holding the value. Empty cells and `?` are skipped.
    #[schemars(required)]
    column: Option<String>,
    /// Required: the metric, e.g. `ch4`; it decides the domain (mine or farm).
    #[schemars(required)]
    metric: Option<String>,
    /// Required: the sensor or device id (a template).
    #[schemars(required)]
    entity: Option<String>,
}

/// `[[reports]]` as written.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReportTable {
    /// Required: the report id (a template).
    #[schemars(required)]
    id: Option<String>,
    /// Required: the category (a template).
    #[schemars(required)]
    category: Option<String>,
    /// Required: the village grid id (a template).
    #[schemars(required)]
    grid: Option<String>,
    /// Required: the events of each row.
    #[schemars(required)]
    events: Option<Vec<ReportEventTable>>,
}

/// One event of `[[reports]]`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReportEventTable {
    /// Required: `created`, `dispatched`, `resolved`, `escalated`, `reopened` or `followed_up`.
    #[schemars(
        required,
        with = "String",
        extend("enum" = ["created", "dispatched", "resolved", "escalated", "reopened", "followed_up"])
    )]
    kind: Option<ReportKind>,
    /// Required: the columns holding its time, read like `[time]` `columns` (same format and
    /// time zone). A row whose cells are empty has no such event.
    #[schemars(required)]
    columns: Option<Vec<String>>,
}

/// `[[registry]]` as written.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RegistryTable {
    /// Required: `sensors`, `devices` or `grids`.
    #[schemars(required, with = "String", extend("enum" = ["sensors", "devices", "grids"]))]
    topic: Option<String>,
    /// Required: the entity id (a template; with a column in it, one record per distinct key).
    #[schemars(required)]
    key: Option<String>,
    /// Required: the record, as on the registry topic (string values may be templates).
    #[schemars(required)]
    value: Option<BTreeMap<String, serde_json::Value>>,
}

/// A string with `{column}` placeholders.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Text(String),
    Column(String),
}

impl Template {
    /// Parses `text`; `{` and `}` delimit column names.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("`{{` without a closing `}}` in \"{text}\""))?;
            let column = &after[..close];
            if column.is_empty() {
                return Err(format!("empty `{{}}` in \"{text}\""));
            }
            parts.push(Part::Column(column.to_string()));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("`}}` without an opening `{{` in \"{text}\""));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The columns the template reads.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Column(c) => Some(c.as_str()),
            Part::Text(_) => None,
        })
    }

    /// True when the template reads no column (the same value for every row).
    pub fn is_constant(&self) -> bool {
        self.columns().next().is_none()
    }

    /// The template filled from a row; `cell` gives a column's value.
    pub fn render<'r>(&self, cell: impl Fn(&str) -> Option<&'r str>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Column(column) => out.push_str(cell(column).unwrap_or_default()),
            }
        }
        out
    }
}

/// Where a row's time comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum RowTime {
    /// Parsed from columns.
    Columns(TimeColumns),
    /// Row `i` (0-based, data rows only) is at `start + i * cadence`.
    Cadence {
        /// The first row's time, epoch milliseconds.
        start: u64,
        /// Milliseconds between rows.
        cadence_ms: u64,
    },
}

/// Columns holding a time, with how to read them.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeColumns {
    /// Joined with one space.
    pub columns: Vec<String>,
    /// chrono strftime format; `None`: RFC 3339 or epoch milliseconds.
    pub format: Option<String>,
    /// Time zone of times without an offset.
    pub time_zone: chrono_tz::Tz,
    /// Where the columns are named in the mapping file (`file:line:col`), for errors.
    pub at: String,
}

/// A reading per row.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadingMapping {
    /// The value's column.
    pub column: String,
    /// What it measures.
    pub metric: Metric,
    /// Its domain (from the metric).
    pub domain: Domain,
    /// The entity id.
    pub entity: Template,
    /// Where the table is in the mapping file.
    pub at: String,
}

/// Report events per row.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportMapping {
    /// Report id.
    pub id: Template,
    /// Category.
    pub category: Template,
    /// Village grid id.
    pub grid: Template,
    /// Each event's kind and time columns.
    pub events: Vec<(ReportKind, TimeColumns)>,
    /// Where the table is in the mapping file.
    pub at: String,
}

/// Reference data from the mapping.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryMapping {
    /// Which registry.
    pub kind: RegistryKind,
    /// The entity id.
    pub key: Template,
    /// The record's fields: strings are templates, other values are copied as they are.
    pub value: BTreeMap<String, RegistryField>,
    /// Where the table is in the mapping file.
    pub at: String,
}

/// One field of a registry record in a mapping.
#[derive(Clone, Debug, PartialEq)]
pub enum RegistryField {
    /// A string, filled from the row.
    Template(Template),
    /// Any other value (number, boolean, ...), the same for every row.
    Literal(serde_json::Value),
}

impl RegistryField {
    /// The field's value for a row; `cell` gives a column's value.
    pub fn render<'r>(&self, cell: impl Fn(&str) -> Option<&'r str>) -> serde_json::Value {
        match self {
            RegistryField::Template(t) => serde_json::Value::from(t.render(cell)),
            RegistryField::Literal(v) => v.clone(),
        }
    }
}

/// A checked mapping file.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapping {
    /// The mapping file itself.
    pub path: PathBuf,
    /// The data file, resolved against the mapping file's directory.
    pub data: PathBuf,
    /// CSV or ARFF.
    pub format: DataFormat,
    /// CSV: lines before the header.
    pub skip_lines: usize,
    /// CSV: the delimiter byte.
    pub delimiter: u8,
    /// Row times.
    pub time: RowTime,
    /// Readings per row.
    pub readings: Vec<ReadingMapping>,
    /// Report events per row.
    pub reports: Vec<ReportMapping>,
    /// Reference data.
    pub registry: Vec<RegistryMapping>,
}

impl Mapping {
    /// Every column the mapping reads, with where it is named (for checking the header).
    pub fn columns(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let RowTime::Columns(time) = &self.time {
            out.extend(time.columns.iter().map(|c| (c.clone(), time.at.clone())));
        }
        for r in &self.readings {
            out.push((r.column.clone(), r.at.clone()));
            out.extend(r.entity.columns().map(|c| (c.to_string(), r.at.clone())));
        }
        for r in &self.reports {
            for t in [&r.id, &r.category, &r.grid] {
                out.extend(t.columns().map(|c| (c.to_string(), r.at.clone())));
            }
            for (_, time) in &r.events {
                out.extend(time.columns.iter().map(|c| (c.clone(), time.at.clone())));
            }
        }
        for r in &self.registry {
            out.extend(r.key.columns().map(|c| (c.to_string(), r.at.clone())));
            for value in r.value.values() {
                if let RegistryField::Template(t) = value {
                    out.extend(t.columns().map(|c| (c.to_string(), r.at.clone())));
                }
            }
        }
        out
    }
}

/// Reads and checks the mapping file at `path`.
pub fn load_mapping(path: &Path) -> Result<Mapping, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic::whole_file(
            path,
            format!("cannot read mapping file: {e}"),
        )])
    })?;
    load_mapping_str(path, &text)
}

/// Checks the mapping file `text` read from `path` (the data file is resolved against its
/// directory).
pub fn load_mapping_str(path: &Path, text: &str) -> Result<Mapping, Diagnostics> {
    let mut cx = FileCx::new(path, text);
    let root = parse_document(&mut cx, text);
    let file: Option<MappingFile> = deserialize_all(&mut cx, root.clone(), "");
    let mapping = file.and_then(|file| compile(&mut cx, &root, path, file));
    let diagnostics = Diagnostics(cx.finish());
    match mapping {
        Some(mapping) => diagnostics.into_result(mapping),
        None if diagnostics.is_empty() => Err(Diagnostics(vec![Diagnostic::whole_file(
            path,
            "not a valid mapping file",
        )])),
        None => Err(diagnostics),
    }
}

/// The span of the value at `keys` (falling back to the whole file).
fn span_at(root: &Spanned<DeValue<'_>>, keys: &[Seg]) -> Range<usize> {
    value_at(root, keys).map_or(0..0, Spanned::span)
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

fn compile(
    cx: &mut FileCx<'_>,
    root: &Spanned<DeValue<'_>>,
    path: &Path,
    file: MappingFile,
) -> Option<Mapping> {
    let before = cx.count();
    let data = match file.file {
        Some(data) => super::base_dir_of(path).join(data),
        None => {
            cx.missing(
                0..0,
                "missing field `file`",
                Some("the data file, relative to this mapping file".into()),
            );
            PathBuf::new()
        }
    };
    let format = file
        .format
        .unwrap_or_else(|| match data.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("arff") => DataFormat::Arff,
            _ => DataFormat::Csv,
        });
    let delimiter = match file.delimiter.as_deref() {
        None => b',',
        Some(d) if d.len() == 1 => d.as_bytes()[0],
        Some(d) => {
            cx.error(
                span_at(root, &[key("delimiter")]),
                format!("`delimiter` must be one ASCII character, not \"{d}\""),
                None,
            );
            b','
        }
    };
    let time = match file.time {
        Some(time) => row_time(cx, root, time),
        None => {
            cx.missing(
                0..0,
                "missing table `[time]`",
                Some("give `columns` and `format`, or `cadence` and `start`".into()),
            );
            None
        }
    };
    let readings = file
        .readings
        .into_iter()
        .enumerate()
        .filter_map(|(i, table)| reading(cx, root, i, table))
        .collect();
    let mut reports = Vec::new();
    for (i, table) in file.reports.into_iter().enumerate() {
        if let Some(r) = report(cx, root, i, table) {
            reports.push(r);
        }
    }
    let registry = file
        .registry
        .into_iter()
        .enumerate()
        .filter_map(|(i, table)| registry(cx, root, i, table))
        .collect();
    let time = time?;
    let mut mapping = Mapping {
        path: path.to_path_buf(),
        data,
        format,
        skip_lines: file.skip_lines,
        delimiter,
        time,
        readings,
        reports,
        registry,
    };
    share_time_format(&mut mapping);
    (cx.count() == before).then_some(mapping)
}

fn time_zone(cx: &mut FileCx<'_>, span: Range<usize>, name: Option<&str>) -> chrono_tz::Tz {
    match name {
        None => chrono_tz::UTC,
        Some(name) => name.parse().unwrap_or_else(|_| {
            cx.error(
                span,
                format!("unknown time zone \"{name}\""),
                Some("use an IANA name such as \"Europe/Rome\" or \"America/Los_Angeles\"".into()),
            );
            chrono_tz::UTC
        }),
    }
}

fn row_time(cx: &mut FileCx<'_>, root: &Spanned<DeValue<'_>>, time: TimeTable) -> Option<RowTime> {
    let at = |k: &str| span_at(root, &[key("time"), key(k)]);
    let zone = time_zone(cx, at("time_zone"), time.time_zone.as_deref());
    match (time.columns.is_empty(), time.cadence) {
        (false, None) => Some(RowTime::Columns(TimeColumns {
            columns: time.columns,
            format: time.format,
            time_zone: zone,
            at: cx.location(&at("columns")),
        })),
        (true, Some(cadence)) => {
            let start = match time
                .start
                .as_deref()
                .map(chrono::DateTime::parse_from_rfc3339)
            {
                Some(Ok(start)) => u64::try_from(start.timestamp_millis()).ok(),
                Some(Err(e)) => {
                    cx.error(
                        at("start"),
                        format!("`start` is not an RFC 3339 time: {e}"),
                        None,
                    );
                    None
                }
                None => {
                    cx.error(
                        span_at(root, &[key("time")]),
                        "`cadence` needs `start`, the first row's time",
                        Some("e.g. start = \"2026-11-01T00:00:00Z\"".into()),
                    );
                    None
                }
            };
            let cadence_ms = u64::try_from(cadence.as_millis()).unwrap_or(u64::MAX);
            if cadence_ms == 0 {
                cx.error(at("cadence"), "`cadence` must be at least 1ms", None);
            }
            Some(RowTime::Cadence {
                start: start?,
                cadence_ms,
            })
        }
        (false, Some(_)) => {
            cx.error(
                at("cadence"),
                "give either `columns` or `cadence` in [time], not both",
                None,
            );
            None
        }
        (true, None) => {
            cx.error(
                span_at(root, &[key("time")]),
                "[time] needs `columns` (with `format`) or `cadence` (with `start`)",
                None,
            );
            None
        }
    }
}

/// Parses a required template field, reporting problems at `span`.
fn template(
    cx: &mut FileCx<'_>,
    span: Range<usize>,
    name: &str,
    text: Option<String>,
    table: &str,
) -> Option<Template> {
    let Some(text) = text else {
        cx.missing(span, format!("missing field `{name}` in [[{table}]]"), None);
        return None;
    };
    match Template::parse(&text) {
        Ok(t) => Some(t),
        Err(e) => {
            cx.error(span, e, Some("write {column} for a column's value".into()));
            None
        }
    }
}

fn reading(
    cx: &mut FileCx<'_>,
    root: &Spanned<DeValue<'_>>,
    i: usize,
    table: ReadingTable,
) -> Option<ReadingMapping> {
    let at = |k: &str| span_at(root, &[key("readings"), Seg::Index(i), key(k)]);
    let whole = span_at(root, &[key("readings"), Seg::Index(i)]);
    let entity = template(cx, at("entity"), "entity", table.entity, "readings");
    let metric = match table.metric {
        Some(name) => {
            let metric = Metric::ALL.iter().copied().find(|m| m.as_str() == name);
            if metric.is_none() {
                let names: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
                cx.error(
                    at("metric"),
                    format!("unknown metric `{name}`"),
                    Some(one_of_hint(&name, &names)),
                );
            }
            metric
        }
        None => {
            cx.missing(
                whole.clone(),
                "missing field `metric` in [[readings]]",
                None,
            );
            None
        }
    };
    let column = table.column.or_else(|| {
        cx.missing(
            whole.clone(),
            "missing field `column` in [[readings]]",
            None,
        );
        None
    });
    let metric = metric?;
    Some(ReadingMapping {
        column: column?,
        metric,
        domain: metric.domain(),
        entity: entity?,
        at: cx.location(&whole),
    })
}

fn report(
    cx: &mut FileCx<'_>,
    root: &Spanned<DeValue<'_>>,
    i: usize,
    table: ReportTable,
) -> Option<ReportMapping> {
    let at = |k: &str| span_at(root, &[key("reports"), Seg::Index(i), key(k)]);
    let whole = span_at(root, &[key("reports"), Seg::Index(i)]);
    let id = template(cx, at("id"), "id", table.id, "reports");
    let category = template(cx, at("category"), "category", table.category, "reports");
    let grid = template(cx, at("grid"), "grid", table.grid, "reports");
    let mut events = Vec::new();
    match table.events {
        None => cx.missing(whole.clone(), "missing field `events` in [[reports]]", None),
        Some(list) if list.is_empty() => cx.error(at("events"), "`events` is empty", None),
        Some(list) => {
            for (j, event) in list.into_iter().enumerate() {
                let span = span_at(
                    root,
                    &[key("reports"), Seg::Index(i), key("events"), Seg::Index(j)],
                );
                match (event.kind, event.columns) {
                    (Some(kind), Some(columns)) if !columns.is_empty() => events.push((
                        kind,
                        TimeColumns {
                            columns,
                            format: None,
                            time_zone: chrono_tz::UTC,
                            at: cx.location(&span),
                        },
                    )),
                    _ => cx.error(
                        span,
                        "each event needs `kind` and non-empty `columns`",
                        Some("e.g. { kind = \"created\", columns = [\"createddate\"] }".into()),
                    ),
                }
            }
        }
    }
    Some(ReportMapping {
        id: id?,
        category: category?,
        grid: grid?,
        events,
        at: cx.location(&whole),
    })
}

fn registry(
    cx: &mut FileCx<'_>,
    root: &Spanned<DeValue<'_>>,
    i: usize,
    table: RegistryTable,
) -> Option<RegistryMapping> {
    let at = |k: &str| span_at(root, &[key("registry"), Seg::Index(i), key(k)]);
    let whole = span_at(root, &[key("registry"), Seg::Index(i)]);
    let kind = match table.topic.as_deref() {
        Some("sensors") => Some(RegistryKind::Sensors),
        Some("devices") => Some(RegistryKind::Devices),
        Some("grids") => Some(RegistryKind::Grids),
        Some(other) => {
            cx.error(
                at("topic"),
                format!("unknown registry topic `{other}`"),
                Some(one_of_hint(other, &["sensors", "devices", "grids"])),
            );
            None
        }
        None => {
            cx.missing(whole.clone(), "missing field `topic` in [[registry]]", None);
            None
        }
    };
    let key_template = template(cx, at("key"), "key", table.key, "registry");
    let value = table.value.or_else(|| {
        cx.missing(whole.clone(), "missing field `value` in [[registry]]", None);
        None
    })?;
    let mut fields = BTreeMap::new();
    for (name, field) in value {
        let parsed = match field.as_str().map(Template::parse) {
            None => RegistryField::Literal(field),
            Some(Ok(t)) => RegistryField::Template(t),
            Some(Err(e)) => {
                cx.error(
                    span_at(
                        root,
                        &[key("registry"), Seg::Index(i), key("value"), key(&name)],
                    ),
                    e,
                    None,
                );
                continue;
            }
        };
        fields.insert(name, parsed);
    }
    Some(RegistryMapping {
        kind: kind?,
        key: key_template?,
        value: fields,
        at: cx.location(&whole),
    })
}

/// Fills in the report events' time format and zone from `[time]` (they are read alike).
fn share_time_format(mapping: &mut Mapping) {
    let (format, zone) = match &mapping.time {
        RowTime::Columns(t) => (t.format.clone(), t.time_zone),
        RowTime::Cadence { .. } => (None, chrono_tz::UTC),
    };
    for report in &mut mapping.reports {
        for (_, time) in &mut report.events {
            time.format.clone_from(&format);
            time.time_zone = zone;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match load_mapping_str(Path::new("m.toml"), text) {
            Ok(m) => panic!("expected errors, got {m:?}"),
            Err(d) => d
                .iter()
                .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
                .collect(),
        }
    }

    #[test]
    fn templates_fill_columns_and_reject_unbalanced_braces() {
        let t = Template::parse("la/cd-{cd}/nc-{nc}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.columns().collect::<Vec<_>>(), ["cd", "nc"]);
        let row = |c: &str| match c {
            "cd" => Some("6"),
            "nc" => Some("19"),
            _ => None,
        };
        assert_eq!(t.render(row), "la/cd-6/nc-19");
        assert!(Template::parse("fixed").is_ok_and(|t| t.is_constant()));
        assert!(Template::parse("a{b").is_err());
        assert!(Template::parse("a}b").is_err());
        assert!(Template::parse("a{}b").is_err());
    }

    #[test]
    fn a_mapping_with_a_cadence_compiles() {
        let text = r#"
file = "data/methane.arff"
[time]
cadence = "30s"
start = "2026-11-01T00:00:00Z"
[[readings]]
column = "MM116"
metric = "ch4"
entity = "mine/face-1/MM116"
[[registry]]
topic = "sensors"
key = "mine/face-1/MM116"
value = { mine = "mine", face = "mine/face-1", kind = "ch4", cadence_ms = 30000 }
"#;
        let m = load_mapping_str(Path::new("config/replay/m.toml"), text)
            .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(m.data, Path::new("config/replay/data/methane.arff"));
        assert_eq!(m.format, DataFormat::Arff);
        assert_eq!(
            m.time,
            RowTime::Cadence {
                start: 1_793_491_200_000,
                cadence_ms: 30_000
            }
        );
        assert_eq!(m.readings[0].domain, Domain::Mine);
        assert_eq!(m.readings[0].at, "config/replay/m.toml:6:1");
    }

    #[test]
    fn every_problem_is_reported_with_its_position() {
        let text = r#"
file = "x.csv"
delimiter = ";;"
[time]
columns = ["t"]
time_zone = "Mars/Olympus"
[[readings]]
column = "v"
metric = "ch5"
entity = "e{"
[[registry]]
topic = "sensor"
key = "k"
value = {}
"#;
        assert_eq!(
            errors(text),
            [
                "3:13: `delimiter` must be one ASCII character, not \";;\"",
                "6:13: unknown time zone \"Mars/Olympus\"",
                "9:10: unknown metric `ch5`",
                "10:10: `{` without a closing `}` in \"e{\"",
                "12:9: unknown registry topic `sensor`",
            ]
        );
    }
}
