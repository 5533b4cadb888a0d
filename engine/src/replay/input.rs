//! Replay inputs: recorded events from JSON lines files, and through a mapping file (see
//! [`crate::config::Mapping`]) from CSV and ARFF files.
//!
//! A JSON lines file holds messages as they are on the input topics: a line with `sensor` is a
//! mine reading, `device` a farm reading, `report` a citizen report event. A line
//! `{"topic": "...", "key": "...", "value": {...}}` is a message of the named topic, which is
//! how registry records (and messages of any topic) are given. Lines that do not decode are dead
//! letters with the reason the live engine would give, their offset the line number.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::{NaiveDateTime, TimeZone};
use citybrain_connectors::dead_letter::DeadLetter;
use citybrain_model::decode::{
    decode_farm_reading, decode_mine_reading, decode_registry, decode_report,
};
use citybrain_model::registry::RegistryKind;
use citybrain_model::{DeadLetterReason, DecodeError, Reading, RegistryUpdate, ReportEvent};

use crate::config::{Config, DataFormat, Diagnostics, Mapping, RowTime, TimeColumns, load_mapping};

/// One recorded event.
#[derive(Clone, Debug, PartialEq)]
pub enum ReplayEvent {
    /// A mine or farm reading.
    Reading(Reading),
    /// A citizen report event.
    Report(ReportEvent),
}

impl ReplayEvent {
    /// Its event time, epoch milliseconds.
    pub fn time(&self) -> u64 {
        match self {
            ReplayEvent::Reading(r) => r.time,
            ReplayEvent::Report(r) => r.time,
        }
    }
}

/// What one input gave.
#[derive(Clone, Debug, Default)]
pub struct LoadedInput {
    /// The input as given on the command line.
    pub name: String,
    /// Its events as streams, each like one partition of a topic: in file order for JSON lines
    /// and for each `[[readings]]` table of a mapping (a sensor log is an arrival log); by time
    /// for each report event of a mapping (a table of requests records states, not arrivals).
    pub streams: Vec<Vec<ReplayEvent>>,
    /// Reference data (loaded before any event).
    pub registry: Vec<RegistryUpdate>,
    /// Lines or rows that could not be used.
    pub dead_letters: Vec<DeadLetter>,
    /// Empty cells in value columns (also `?`, `NaN`, `NA`): no reading.
    pub empty_cells: u64,
}

/// An input could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The mapping file is invalid.
    #[error("{0}")]
    Mapping(Diagnostics),
    /// The data file does not have what the mapping reads.
    #[error("{0}")]
    Data(String),
}

/// The topic names a `{"topic": ...}` line may use, from the engine config.
#[derive(Clone, Debug)]
pub struct Topics {
    mine: String,
    farm: String,
    citizen: String,
    registry: [(String, RegistryKind); 3],
}

impl Topics {
    /// The topics of `config`.
    pub fn of(config: &Config) -> Self {
        Topics {
            mine: config.sources.mine.topic.clone(),
            farm: config.sources.farm.topic.clone(),
            citizen: config.sources.citizen.topic.clone(),
            registry: [
                (config.registry.sensors.clone(), RegistryKind::Sensors),
                (config.registry.devices.clone(), RegistryKind::Devices),
                (config.registry.grids.clone(), RegistryKind::Grids),
            ],
        }
    }
}

/// Loads one `--input`: `FILE.jsonl`, `MAPPING.toml`, or `MAPPING.toml=DATA` (the mapping
/// applied to another data file than the one it names).
pub fn load_input(spec: &str, topics: &Topics) -> Result<LoadedInput, InputError> {
    let (first, data) = match spec.split_once('=') {
        Some((mapping, data)) => (mapping, Some(PathBuf::from(data))),
        None => (spec, None),
    };
    let path = Path::new(first);
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let mut loaded = match extension.as_deref() {
        Some("toml") => {
            let mut mapping = load_mapping(path).map_err(InputError::Mapping)?;
            if let Some(data) = data {
                mapping.data = data;
            }
            load_mapped(&mapping)?
        }
        Some("csv" | "arff") => {
            return Err(InputError::Data(format!(
                "{spec}: a {} file needs a mapping file: --input MAPPING.toml or \
                 MAPPING.toml={spec} (config/replay/ has one per data set)",
                extension.as_deref().unwrap_or_default()
            )));
        }
        _ => {
            let text = read(path)?;
            load_jsonl(spec, &text, topics)
        }
    };
    loaded.name = spec.to_string();
    Ok(loaded)
}

fn read(path: &Path) -> Result<String, InputError> {
    let bytes = std::fs::read(path).map_err(|source| InputError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // Recorded files come from many tools: replace invalid UTF-8 instead of refusing the file.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Decodes JSON lines; `name` is the dead letters' topic.
pub fn load_jsonl(name: &str, text: &str, topics: &Topics) -> LoadedInput {
    let mut out = LoadedInput::default();
    let mut events = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let offset = i64::try_from(index + 1).unwrap_or(i64::MAX);
        let letter = |e: DecodeError, key: Option<&[u8]>, payload: &[u8]| {
            DeadLetter::new(e.reason, e.detail, name, 0, offset, key, payload)
        };
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(value) => value,
            Err(e) => {
                let error = DecodeError::new(DeadLetterReason::MalformedJson, e.to_string());
                out.dead_letters.push(letter(error, None, line.as_bytes()));
                continue;
            }
        };
        let field = |k: &str| value.get(k).is_some();
        let result = if let Some(topic) = value.get("topic").and_then(|t| t.as_str()) {
            let key = value.get("key").and_then(|k| k.as_str()).map(str::as_bytes);
            let payload = match value.get("value") {
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(v) => v.to_string().into_bytes(),
            };
            match topic_message(topics, topic, key, &payload) {
                Ok(decoded) => Ok(decoded),
                Err(e) => {
                    out.dead_letters.push(letter(e, key, &payload));
                    continue;
                }
            }
        } else if field("sensor") {
            decode_mine_reading(line.as_bytes()).map(|r| Decoded::Event(ReplayEvent::Reading(r)))
        } else if field("device") {
            decode_farm_reading(line.as_bytes()).map(|r| Decoded::Event(ReplayEvent::Reading(r)))
        } else if field("report") {
            decode_report(line.as_bytes()).map(|r| Decoded::Event(ReplayEvent::Report(r)))
        } else {
            Err(DecodeError::new(
                DeadLetterReason::MissingField,
                "a line needs `sensor`, `device`, `report`, or `topic` with `key` and `value`",
            ))
        };
        match result {
            Ok(Decoded::Event(event)) => events.push(event),
            Ok(Decoded::Registry(update)) => out.registry.push(update),
            Err(e) => out.dead_letters.push(letter(e, None, line.as_bytes())),
        }
    }
    out.streams.push(events);
    out
}

enum Decoded {
    Event(ReplayEvent),
    Registry(RegistryUpdate),
}

fn topic_message(
    topics: &Topics,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
) -> Result<Decoded, DecodeError> {
    if topic == topics.mine {
        decode_mine_reading(payload).map(|r| Decoded::Event(ReplayEvent::Reading(r)))
    } else if topic == topics.farm {
        decode_farm_reading(payload).map(|r| Decoded::Event(ReplayEvent::Reading(r)))
    } else if topic == topics.citizen {
        decode_report(payload).map(|r| Decoded::Event(ReplayEvent::Report(r)))
    } else if let Some((_, kind)) = topics.registry.iter().find(|(name, _)| name == topic) {
        decode_registry(*kind, key, Some(payload)).map(Decoded::Registry)
    } else {
        Err(DecodeError::new(
            DeadLetterReason::MissingField,
            format!("`{topic}` is not an input or registry topic of the config"),
        ))
    }
}

/// A table of text cells with a header.
struct Table {
    header: Vec<String>,
    /// Each row with its 1-based line in the file.
    rows: Vec<(u64, csv::StringRecord)>,
}

impl Table {
    fn index(&self, column: &str) -> Option<usize> {
        self.header.iter().position(|h| h == column)
    }
}

fn csv_reader(delimiter: u8, has_headers: bool, text: &str) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(has_headers)
        .flexible(true)
        .from_reader(text.as_bytes())
}

fn read_csv(mapping: &Mapping, text: &str) -> Result<Table, InputError> {
    // Skip the metadata lines, keeping line numbers true to the file.
    let mut start = 0;
    for _ in 0..mapping.skip_lines {
        start = text[start..]
            .find('\n')
            .map_or(text.len(), |i| start + i + 1);
    }
    let first_line = mapping.skip_lines as u64 + 1;
    let mut reader = csv_reader(mapping.delimiter, true, &text[start..]);
    let header = reader
        .headers()
        .map_err(|e| InputError::Data(format!("{}: header: {e}", mapping.data.display())))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record =
            record.map_err(|e| InputError::Data(format!("{}: {e}", mapping.data.display())))?;
        let line = record.position().map_or(0, |p| p.line()) + first_line - 1;
        rows.push((line, record));
    }
    Ok(Table { header, rows })
}

fn read_arff(mapping: &Mapping, text: &str) -> Result<Table, InputError> {
    let mut header = Vec::new();
    let mut data_start = None;
    let mut offset = 0;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        let lower = trimmed.to_ascii_lowercase();
        if lower.starts_with("@attribute") {
            let rest = trimmed["@attribute".len()..].trim_start();
            let name = match rest.chars().next() {
                Some(q @ ('\'' | '"')) => rest[1..].split(q).next().unwrap_or_default(),
                _ => rest.split_whitespace().next().unwrap_or_default(),
            };
            header.push(name.to_string());
        } else if lower.starts_with("@data") {
            data_start = Some((index, offset + line.len() + 1));
            break;
        }
        offset += line.len() + 1;
    }
    let Some((data_line, data_offset)) = data_start else {
        return Err(InputError::Data(format!(
            "{}: no @data line: not an ARFF file",
            mapping.data.display()
        )));
    };
    let body = text.get(data_offset..).unwrap_or_default();
    let mut reader = csv_reader(b',', false, body);
    let mut rows = Vec::new();
    for record in reader.records() {
        let record =
            record.map_err(|e| InputError::Data(format!("{}: {e}", mapping.data.display())))?;
        let line = record.position().map_or(0, |p| p.line()) + data_line as u64 + 1;
        let comment = record
            .get(0)
            .is_some_and(|c| c.trim_start().starts_with('%'));
        if !comment {
            rows.push((line, record));
        }
    }
    Ok(Table { header, rows })
}

/// Reads `time` from a row; `Ok(None)` when its cells are empty.
fn cell_time(
    time: &TimeColumns,
    indexes: &[usize],
    record: &csv::StringRecord,
) -> Result<Option<u64>, String> {
    let joined = indexes
        .iter()
        .map(|&i| record.get(i).unwrap_or_default().trim())
        .collect::<Vec<_>>()
        .join(" ");
    let joined = joined.trim();
    if joined.is_empty() {
        return Ok(None);
    }
    let millis = match &time.format {
        Some(format) => {
            let naive = NaiveDateTime::parse_from_str(joined, format)
                .map_err(|e| format!("time \"{joined}\" does not match \"{format}\": {e}"))?;
            // An hour that repeats when clocks go back is read as its first occurrence; an hour
            // skipped when they go forward does not exist.
            time.time_zone
                .from_local_datetime(&naive)
                .earliest()
                .ok_or_else(|| format!("time \"{joined}\" does not exist in {}", time.time_zone))?
                .timestamp_millis()
        }
        None => {
            let value = match joined.parse::<u64>() {
                Ok(ms) => serde_json::Value::from(ms),
                Err(_) => serde_json::Value::from(joined),
            };
            let ms = citybrain_model::time::parse_event_time(&value)?;
            i64::try_from(ms).unwrap_or(i64::MAX)
        }
    };
    u64::try_from(millis)
        .map(Some)
        .map_err(|_| format!("time \"{joined}\" is before 1970"))
}

fn indexes_of(table: &Table, columns: &[String]) -> Vec<usize> {
    columns.iter().filter_map(|c| table.index(c)).collect()
}

/// Reads the mapping's data file into events.
pub fn load_mapped(mapping: &Mapping) -> Result<LoadedInput, InputError> {
    let text = read(&mapping.data)?;
    let table = match mapping.format {
        DataFormat::Csv => read_csv(mapping, &text)?,
        DataFormat::Arff => read_arff(mapping, &text)?,
    };
    let missing: Vec<String> = mapping
        .columns()
        .into_iter()
        .filter(|(column, _)| table.index(column).is_none())
        .map(|(column, at)| format!("{at}: column `{column}` is not in the data file"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() {
        return Err(InputError::Data(format!(
            "{}\n  hint: the columns of {} are: {}",
            missing.join("\n"),
            mapping.data.display(),
            table.header.join(", ")
        )));
    }
    let name = mapping.data.display().to_string();
    let mut out = LoadedInput::default();
    let value_columns: Vec<usize> = mapping
        .readings
        .iter()
        .filter_map(|r| table.index(&r.column))
        .collect();
    let report_times: Vec<Vec<Vec<usize>>> = mapping
        .reports
        .iter()
        .map(|r| {
            r.events
                .iter()
                .map(|(_, t)| indexes_of(&table, &t.columns))
                .collect()
        })
        .collect();
    let time_columns = match &mapping.time {
        RowTime::Columns(time) => indexes_of(&table, &time.columns),
        RowTime::Cadence { .. } => Vec::new(),
    };
    let mut registry_keys = BTreeSet::new();
    let mut readings: Vec<Vec<ReplayEvent>> = vec![Vec::new(); mapping.readings.len()];
    let mut reports: Vec<Vec<ReplayEvent>> =
        vec![Vec::new(); mapping.reports.iter().map(|r| r.events.len()).sum()];
    let mut data_rows = 0u64;
    for (line, record) in &table.rows {
        if record.iter().all(|cell| cell.trim().is_empty()) {
            continue; // a blank row
        }
        let row_index = data_rows;
        data_rows += 1;
        let offset = i64::try_from(*line).unwrap_or(i64::MAX);
        let cell = |column: &str| {
            table
                .index(column)
                .and_then(|i| record.get(i))
                .map(str::trim)
        };
        // The row as text only for a dead letter: most rows never need it.
        let letter = |reason: DeadLetterReason, detail: String| {
            let raw = record.iter().collect::<Vec<_>>().join(",");
            DeadLetter::new(reason, detail, &name, 0, offset, None, raw.as_bytes())
        };
        for registry in &mapping.registry {
            let key = registry.key.render(cell);
            if !registry_keys.insert((registry.kind as u8, key.clone())) {
                continue;
            }
            let value: serde_json::Map<String, serde_json::Value> = registry
                .value
                .iter()
                .map(|(field, v)| (field.clone(), v.render(cell)))
                .collect();
            let bytes = serde_json::Value::Object(value).to_string().into_bytes();
            match decode_registry(registry.kind, Some(key.as_bytes()), Some(&bytes)) {
                Ok(update) => out.registry.push(update),
                Err(e) => out
                    .dead_letters
                    .push(letter(e.reason, format!("{}: {}", registry.at, e.detail))),
            }
        }
        let row_time = match &mapping.time {
            RowTime::Cadence { start, cadence_ms } => {
                Ok(Some(start + cadence_ms.saturating_mul(row_index)))
            }
            RowTime::Columns(time) => cell_time(time, &time_columns, record),
        };
        match row_time {
            Ok(Some(time)) => {
                let tables = mapping.readings.iter().zip(&value_columns);
                for ((reading, &column), stream) in tables.zip(&mut readings) {
                    let text = record.get(column).unwrap_or_default().trim();
                    if NO_VALUE.iter().any(|n| text.eq_ignore_ascii_case(n)) {
                        out.empty_cells += 1;
                        continue;
                    }
                    match text.parse::<f64>() {
                        Ok(value) if value.is_finite() => {
                            stream.push(ReplayEvent::Reading(Reading {
                                domain: reading.domain,
                                entity: reading.entity.render(cell).into(),
                                metric: reading.metric,
                                value,
                                time,
                            }));
                        }
                        _ => out.dead_letters.push(letter(
                            DeadLetterReason::WrongType,
                            format!("`{}` is not a finite number: \"{text}\"", reading.column),
                        )),
                    }
                }
            }
            Ok(None) if !mapping.readings.is_empty() => out.dead_letters.push(letter(
                DeadLetterReason::MissingField,
                "the row has no time".to_string(),
            )),
            Ok(None) => {}
            Err(detail) => {
                out.dead_letters
                    .push(letter(DeadLetterReason::BadTimestamp, detail));
            }
        }
        let mut streams = reports.iter_mut();
        for (report, times) in mapping.reports.iter().zip(&report_times) {
            for (((kind, time), indexes), stream) in
                report.events.iter().zip(times).zip(&mut streams)
            {
                match cell_time(time, indexes, record) {
                    Ok(Some(at)) => stream.push(ReplayEvent::Report(ReportEvent {
                        report: report.id.render(cell),
                        time: at,
                        kind: *kind,
                        category: report.category.render(cell),
                        grid: report.grid.render(cell),
                        unit: None,
                    })),
                    Ok(None) => {}
                    Err(detail) => out
                        .dead_letters
                        .push(letter(DeadLetterReason::BadTimestamp, detail)),
                }
            }
        }
    }
    for stream in &mut reports {
        stream.sort_by_key(ReplayEvent::time);
    }
    out.streams = readings.into_iter().chain(reports).collect();
    Ok(out)
}

/// Cells that mean "no measurement" (compared ignoring case).
const NO_VALUE: [&str; 5] = ["", "?", "nan", "na", "null"];

#[cfg(test)]
mod tests {
    use citybrain_model::{Domain, Metric, ReportKind};

    use super::*;
    use crate::config::load_mapping_str;

    fn topics() -> Topics {
        Topics::of(&Config::default())
    }

    #[test]
    fn json_lines_decode_like_the_topics_and_bad_lines_are_dead_letters() {
        let text = r#"{"sensor":"m/f/ch4","ts":"2026-11-29T00:00:00Z","metric":"ch4","value":0.5}
{"device":"farm/gh/t","ts":1795910400000,"metric":"air_temp","value":20}
{"report":"R1","ts":"2026-11-29T00:00:00Z","kind":"created","category":"c","grid":"g"}
{"topic":"registry.grids","key":"g","value":{"village":"g","town":"t","district":"d"}}
not json

{"sensor":"m/f/ch4","ts":"2026-11-29T00:00:00Z","metric":"ch9","value":0.5}
"#;
        let loaded = load_jsonl("in.jsonl", text, &topics());
        assert_eq!(loaded.streams.len(), 1);
        assert_eq!(loaded.streams[0].len(), 3);
        assert_eq!(loaded.registry.len(), 1);
        let letters: Vec<(DeadLetterReason, i64)> = loaded
            .dead_letters
            .iter()
            .map(|d| (d.reason, d.offset))
            .collect();
        assert_eq!(
            letters,
            [
                (DeadLetterReason::MalformedJson, 5),
                (DeadLetterReason::UnknownMetric, 7)
            ]
        );
    }

    #[test]
    fn csv_rows_become_readings_reports_and_registry_records() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data = dir.path().join("d.csv");
        let csv = "meta line\nid,t,v,closed,cd\n1,18/08/2021 12:15:00,37.5,18/08/2021 13:00:00,6\n\
                   2,18/08/2021 12:30:00,NaN,,7\n,,,,\n3,bad,1,,6\n";
        std::fs::write(&data, csv).unwrap_or_else(|e| panic!("{e}"));
        let mapping = r#"
file = "d.csv"
skip_lines = 1
[time]
columns = ["t"]
format = "%d/%m/%Y %H:%M:%S"
time_zone = "Europe/Rome"
[[readings]]
column = "v"
metric = "air_temp"
entity = "farm/gh-1/t"
[[reports]]
id = "R-{id}"
category = "c"
grid = "cd-{cd}"
events = [{ kind = "resolved", columns = ["closed"] }]
[[registry]]
topic = "grids"
key = "cd-{cd}"
value = { village = "cd-{cd}", town = "t", district = "d" }
"#;
        let path = dir.path().join("m.toml");
        let mapping = load_mapping_str(&path, mapping).unwrap_or_else(|d| panic!("{d}"));
        let loaded = load_mapped(&mapping).unwrap_or_else(|e| panic!("{e}"));
        // 12:15 in Rome in August is 10:15 UTC.
        assert_eq!(
            loaded.streams,
            [
                vec![ReplayEvent::Reading(Reading {
                    domain: Domain::Farm,
                    entity: "farm/gh-1/t".into(),
                    metric: Metric::AirTemp,
                    value: 37.5,
                    time: 1_629_281_700_000,
                })],
                vec![ReplayEvent::Report(ReportEvent {
                    report: "R-1".into(),
                    time: 1_629_284_400_000,
                    kind: ReportKind::Resolved,
                    category: "c".into(),
                    grid: "cd-6".into(),
                    unit: None,
                })],
            ]
        );
        assert_eq!(loaded.empty_cells, 1);
        assert_eq!(loaded.registry.len(), 2, "one record per distinct key");
        let letters: Vec<(DeadLetterReason, i64)> = loaded
            .dead_letters
            .iter()
            .map(|d| (d.reason, d.offset))
            .collect();
        assert_eq!(letters, [(DeadLetterReason::BadTimestamp, 6)]);
    }

    #[test]
    fn a_column_the_data_lacks_is_named_with_where_the_mapping_reads_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            dir.path().join("d.arff"),
            "@relation r\n@attribute 'A' real\n@data\n1\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let text = "file = \"d.arff\"\n[time]\ncadence = \"30s\"\nstart = \"2026-11-01T00:00:00Z\"\n\
                    [[readings]]\ncolumn = \"B\"\nmetric = \"ch4\"\nentity = \"s\"\n";
        let mapping =
            load_mapping_str(&dir.path().join("m.toml"), text).unwrap_or_else(|d| panic!("{d}"));
        match load_mapped(&mapping) {
            Err(InputError::Data(message)) => {
                assert!(
                    message.contains("m.toml:5:1: column `B` is not in the data file"),
                    "{message}"
                );
                assert!(message.contains("are: A"), "{message}");
            }
            other => panic!("expected a data error, got {other:?}"),
        }
    }
}
