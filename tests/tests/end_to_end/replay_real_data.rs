//! `citybrain replay` over the real data sets through the mapping files in `config/replay/`:
//! the transitions equal the plain-loop reference of `citybrain_operators::reference` over the
//! file read independently here, and the citizen KPIs at the end equal counts made here from
//! the file. Replay ends at the newest event time, so the reference is cut there too.
//!
//! Also: `--compare` on a scripted JSON lines input, with the exact changes per rule.

#![allow(clippy::expect_used)] // test helpers: a bad data file must fail the test loudly

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{NaiveDateTime, TimeZone};
use citybrain_engine::config::{self, LoadedConfig};
use citybrain_engine::replay::{self, ReplayRun, RuleChange, Schedule};
use citybrain_model::registry::{DeviceRecord, SensorRecord};
use citybrain_model::{AlertTransition, DeadLetterReason, Domain, EntityInfo, Metric, Reading};
use citybrain_operators::reference::rule_transitions;
use citybrain_operators::{EntityId, EntityKey};
use citybrain_tests::{arff_column, shared_data, write_file};

use crate::rule_kinds_real_data::{FARM_RULES, MINE_RULES};

/// The repository's `config/` directory.
fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// `--input` for a shipped mapping, reading the data from [`shared_data`].
fn mapped(mapping: &str, data: &str) -> String {
    format!(
        "{}={}",
        config_dir().join("replay").join(mapping).display(),
        shared_data().join(data).display()
    )
}

/// A loaded config from `main` (TOML) and one rule file.
fn loaded(main: &str, rules: &str) -> LoadedConfig {
    let path = Path::new("replay-test.toml");
    LoadedConfig {
        config: config::load_str(path, main).unwrap_or_else(|d| panic!("config: {d}")),
        rules: config::load_rules_str(Path::new("rules.toml"), rules)
            .unwrap_or_else(|d| panic!("rules: {d}")),
        base_dir: PathBuf::from("."),
    }
}

/// Replays `inputs` with `loaded`'s rules.
fn replay(loaded: &LoadedConfig, inputs: &[String]) -> (Arc<Schedule>, ReplayRun) {
    let settings = replay::settings(loaded, Some(2)).expect("settings");
    let schedule = replay::schedule(loaded, inputs, settings.lateness)
        .unwrap_or_else(|e| panic!("inputs: {e}"));
    let run = replay::run(
        &schedule,
        &settings,
        &loaded.rules,
        &indicatif::ProgressBar::hidden(),
    )
    .expect("replay");
    (schedule, run)
}

/// The reference's transitions before the end of the data.
fn reference(
    readings: &[Reading],
    registry: &HashMap<EntityKey, EntityInfo>,
    loaded: &LoadedConfig,
    end: u64,
) -> Vec<AlertTransition> {
    let mut expected = rule_transitions(readings, registry, &loaded.rules);
    expected.retain(|t| t.event_time < end);
    expected
}

/// Mine sensors read independently of the mapping from columns of an ARFF file without
/// timestamps (row i at `t0 + cadence_ms * i`): (column, metric, sensor name under `face`).
/// Returns the readings and the registry the mapping describes.
fn arff_sensors(
    file: &Path,
    mine: &str,
    face: &str,
    columns: &[(&str, Metric, &str)],
    t0: u64,
    cadence_ms: u64,
) -> (Vec<Reading>, HashMap<EntityKey, EntityInfo>) {
    let mut readings = Vec::new();
    let mut registry = HashMap::new();
    for &(column, metric, sensor) in columns {
        let entity: EntityId = format!("{face}/{sensor}").into();
        let record = SensorRecord {
            sensor: None,
            mine: mine.into(),
            face: face.into(),
            kind: metric,
            cadence_ms,
        };
        registry.insert((Domain::Mine, entity.clone()), EntityInfo::from(record));
        for (i, value) in arff_column(file, column).into_iter().enumerate() {
            readings.push(Reading {
                domain: Domain::Mine,
                entity: entity.clone(),
                metric,
                value,
                time: t0 + cadence_ms * i as u64,
            });
        }
    }
    (readings, registry)
}

#[test]
fn methane_replay_equals_the_reference() {
    let file = shared_data().join("coalmine/methane.arff");
    let t0 = 1_793_491_200_000; // 2026-11-01T00:00:00Z, the mapping's start
    let columns = [
        ("MM31", Metric::Ch4, "MM31"),
        ("MM116", Metric::Ch4, "MM116"),
        ("AS038", Metric::AirVelocity, "AS038"),
        ("PG072", Metric::Airflow, "PG072"),
    ];
    let (readings, registry) = arff_sensors(
        &file,
        "polish-mine",
        "polish-mine/face-116",
        &columns,
        t0,
        30_000,
    );
    assert_eq!(readings.len(), 4 * 19_096);
    let loaded = loaded("", MINE_RULES);
    let (schedule, run) = replay(&loaded, &[mapped("methane.toml", "coalmine/methane.arff")]);
    assert_eq!(schedule.events, 4 * 19_096);
    assert!(
        schedule.dead_letters.is_empty(),
        "{:?}",
        schedule.dead_letters.first()
    );
    assert_eq!(schedule.end, t0 + 30_000 * 19_095 + 1);
    let expected = reference(&readings, &registry, &loaded, schedule.end);
    assert!(expected.len() > 100, "the rules fire on this data");
    assert_eq!(run.transitions.len(), expected.len());
    assert_eq!(run.transitions, expected);
}

#[test]
fn cow_collar_replay_equals_the_reference() {
    // Independent of the mapping: the collar's local time is CEST (UTC+2) all through the file.
    let path = shared_data().join("cows/sample_data.csv");
    let text = std::fs::read_to_string(&path).expect("cow data");
    let device = "agroscope/cow-50001964/activity";
    let mut readings = Vec::new();
    for line in text.lines().skip(8) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() < 3 || fields[0].is_empty() {
            continue;
        }
        let local = NaiveDateTime::parse_from_str(
            &format!("{} {}", fields[0], fields[1]),
            "%d.%m.%Y %H:%M:%S",
        )
        .expect("date");
        let time = local.and_utc().timestamp_millis() - 2 * 3_600_000;
        readings.push(Reading {
            domain: Domain::Farm,
            entity: device.into(),
            metric: Metric::Activity,
            value: fields[2].parse().expect("motion index"),
            time: u64::try_from(time).expect("after 1970"),
        });
    }
    assert_eq!(readings.len(), 22_730);
    let record = DeviceRecord {
        device: None,
        farm: "agroscope".into(),
        greenhouse: None,
        herd: Some("agroscope/herd-1".into()),
        animal: Some("agroscope/cow-50001964".into()),
        kind: Metric::Activity,
        cadence_ms: 60_000,
    };
    let registry = HashMap::from([((Domain::Farm, device.into()), record.into())]);
    let loaded = loaded("", FARM_RULES);
    let (schedule, run) = replay(&loaded, &[mapped("cows.toml", "cows/sample_data.csv")]);
    assert_eq!(schedule.events, 22_730);
    assert!(schedule.dead_letters.is_empty());
    let expected = reference(&readings, &registry, &loaded, schedule.end);
    assert!(expected.iter().any(|t| t.rule == "cow-inactive"));
    assert_eq!(run.transitions, expected);
}

#[test]
fn greenhouse_climate_replay_with_backwards_timestamps_equals_the_sorted_reference() {
    // TRH_1.csv has timestamps that go back up to an hour; a farm lateness of 2 h takes them in
    // order, so the result is the reference over the sorted file.
    let path = shared_data().join("greenhouse/TRH_1.csv");
    let mut reader = csv::Reader::from_path(&path).expect("TRH_1.csv");
    let rome = chrono_tz::Europe::Rome;
    let mut readings = Vec::new();
    let mut backwards = 0;
    let mut newest = 0;
    for record in reader.records() {
        let record = record.expect("row");
        let local = NaiveDateTime::parse_from_str(&record[1], "%d/%m/%Y %H:%M:%S").expect("time");
        let time = rome
            .from_local_datetime(&local)
            .earliest()
            .expect("a local time")
            .timestamp_millis();
        let time = u64::try_from(time).expect("after 1970");
        if time < newest {
            backwards += 1;
        }
        newest = newest.max(time);
        for (column, metric, device) in [
            (2, Metric::AirTemp, "italy-tunnels/gh-1/air-temp"),
            (3, Metric::Humidity, "italy-tunnels/gh-1/humidity"),
        ] {
            readings.push(Reading {
                domain: Domain::Farm,
                entity: device.into(),
                metric,
                value: record[column].parse().expect("value"),
                time,
            });
        }
    }
    assert!(backwards > 0, "the file has timestamps that go backwards");
    let mut registry = HashMap::new();
    for (device, metric) in [
        ("italy-tunnels/gh-1/air-temp", Metric::AirTemp),
        ("italy-tunnels/gh-1/humidity", Metric::Humidity),
    ] {
        let record = DeviceRecord {
            device: None,
            farm: "italy-tunnels".into(),
            greenhouse: Some("italy-tunnels/gh-1".into()),
            herd: None,
            animal: None,
            kind: metric,
            cadence_ms: 900_000,
        };
        registry.insert((Domain::Farm, device.into()), record.into());
    }
    let rules = r#"
[[rule]]
id = "greenhouse-hot-1h"
kind = "window"
domain = "farm"
metric = "air_temp"
window = "1h"
group_by = "greenhouse"
aggregate = "max"
above = 35
clear = 30

[[rule]]
id = "humid-above-baseline"
kind = "baseline"
domain = "farm"
metric = "humidity"
baseline = "24h"
above_ratio = 1.3
clear = 1.1
"#;
    let loaded = loaded("[sources.farm]\nallowed_lateness = \"2h\"\n", rules);
    let input = mapped("greenhouse-climate.toml", "greenhouse/TRH_1.csv");
    let (schedule, run) = replay(&loaded, &[input]);
    assert!(
        schedule.dead_letters.is_empty(),
        "{:?}",
        schedule.dead_letters.first()
    );
    assert_eq!(schedule.events as usize, readings.len());
    let expected = reference(&readings, &registry, &loaded, schedule.end);
    for rule in ["greenhouse-hot-1h", "humid-above-baseline"] {
        assert!(
            expected.iter().any(|t| t.rule == rule),
            "{rule} fires on this data"
        );
    }
    assert_eq!(run.transitions, expected);

    // With the default 250 ms lateness the backwards rows are late, as they would be live.
    let strict = self::loaded("", rules);
    let input = mapped("greenhouse-climate.toml", "greenhouse/TRH_1.csv");
    let (schedule, _) = replay(&strict, &[input]);
    assert!(!schedule.dead_letters.is_empty());
    assert!(
        schedule
            .dead_letters
            .iter()
            .all(|d| d.reason == DeadLetterReason::Late)
    );
}

/// The LA311 requests as the file has them: per request its type (the category), when it was
/// created and when it was closed (epoch ms; `None`: still open).
fn la311_requests() -> Vec<(String, u64, Option<u64>)> {
    let path = shared_data().join("la311/test_requests.csv");
    let mut reader = csv::Reader::from_path(&path).expect("test_requests.csv");
    let la = chrono_tz::America::Los_Angeles;
    let time = |text: &str| -> Option<u64> {
        let local = NaiveDateTime::parse_from_str(text.trim(), "%m/%d/%y %H:%M").ok()?;
        u64::try_from(
            la.from_local_datetime(&local)
                .earliest()?
                .timestamp_millis(),
        )
        .ok()
    };
    reader
        .records()
        .map(|record| {
            let record = record.expect("row");
            let created = time(&record[4]).expect("createddate");
            (record[1].to_string(), created, time(&record[7]))
        })
        .collect()
}

#[test]
fn la311_replay_kpis_equal_counts_from_the_file() {
    let requests = la311_requests();
    let total = requests.len();
    let open = requests.iter().filter(|r| r.2.is_none()).count();
    let mut hours: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (kind, created, closed) in &requests {
        if let Some(closed) = closed {
            hours
                .entry(kind.clone())
                .or_default()
                .push((closed - created) as f64 / 3_600_000.0);
        }
    }
    let loaded = loaded("", "");
    let (schedule, run) = replay(&loaded, &[mapped("la311.toml", "la311/test_requests.csv")]);
    assert!(
        schedule.dead_letters.is_empty(),
        "{:?}",
        schedule.dead_letters.first()
    );
    assert_eq!(schedule.events, 10_000 + 9_951);
    let kpis = &run.kpis.values;
    assert_eq!(open, 49);
    assert_eq!(
        kpis["open_backlog"],
        BTreeMap::from([("la".to_string(), open as f64)])
    );
    // The newest event is the last closure: every closed request is in by the end.
    assert_eq!(
        kpis["closure_rate"][""],
        (total - open) as f64 / total as f64
    );
    let medians: BTreeMap<String, f64> = hours
        .into_iter()
        .map(|(kind, mut h)| {
            h.sort_by(f64::total_cmp);
            let rank = (0.5 * h.len() as f64).ceil() as usize; // nearest rank
            (kind, h[rank.max(1) - 1])
        })
        .collect();
    assert_eq!(medians.len(), 11);
    assert_eq!(kpis["resolve_hours_p50"], medians);
}

/// Two categories get a 72 h deadline, the others one far beyond the data: at the end, the
/// open reports of those two categories are overdue and no other report is.
const LA311_DEADLINES: &str = r#"
[[rule]]
id = "la311-deadline"
kind = "report_deadline"
domain = "citizen"
deadline = "3650d"
category_deadlines = { "Graffiti Removal" = "72h", "Bulky Items" = "72h" }
"#;

#[test]
fn la311_overdue_share_is_the_open_requests_past_their_category_deadline() {
    let requests = la311_requests();
    let open = requests.iter().filter(|r| r.2.is_none()).count();
    let overdue = requests
        .iter()
        .filter(|(kind, _, closed)| {
            closed.is_none() && (kind == "Graffiti Removal" || kind == "Bulky Items")
        })
        .count();
    assert_eq!((open, overdue), (49, 9));
    let loaded = loaded("", LA311_DEADLINES);
    let (_, run) = replay(&loaded, &[mapped("la311.toml", "la311/test_requests.csv")]);
    assert_eq!(
        run.kpis.values["overdue_share"],
        BTreeMap::from([(String::new(), overdue as f64 / open as f64)])
    );
}

const THRESHOLDS: &str = r#"
[[rule]]
id = "ch4-alarm"
domain = "mine"
metric = "ch4"
above = 1.0
clear = 0.9

[[rule]]
id = "co-high"
domain = "mine"
metric = "co"
above = 24
"#;

#[test]
fn compare_shows_alerts_added_removed_and_shifted_per_rule() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Two sensors of one face; one reading a second from 08:00:00.
    let ch4 = |s: &str, t: u32, v: f64| {
        format!(r#"{{"sensor":"{s}","ts":"2026-11-29T08:00:{t:02}Z","metric":"ch4","value":{v}}}"#)
    };
    let lines = [
        r#"{"topic":"registry.sensors","key":"m/f/a","value":{"mine":"m","face":"m/f","kind":"ch4","cadence_ms":1000}}"#.to_string(),
        r#"{"topic":"registry.sensors","key":"m/f/b","value":{"mine":"m","face":"m/f","kind":"ch4","cadence_ms":1000}}"#.to_string(),
        ch4("m/f/a", 0, 0.5),
        ch4("m/f/b", 0, 1.1),
        ch4("m/f/a", 1, 1.1),
        ch4("m/f/b", 1, 1.1),
        ch4("m/f/a", 2, 1.3),
        ch4("m/f/b", 2, 0.5),
        ch4("m/f/a", 3, 0.5),
        ch4("m/f/b", 3, 0.5),
        "this line is not JSON".to_string(),
        ch4("m/f/a", 4, 0.5),
    ];
    let input = dir.path().join("events.jsonl");
    write_file(&input, &(lines.join("\n") + "\n"));
    let loaded = loaded("", THRESHOLDS);
    let settings = replay::settings(&loaded, Some(1)).expect("settings");
    let schedule = replay::schedule(&loaded, &[input.display().to_string()], settings.lateness)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(schedule.events, 9);
    let letters: Vec<(DeadLetterReason, i64)> = schedule
        .dead_letters
        .iter()
        .map(|d| (d.reason, d.offset))
        .collect();
    assert_eq!(letters, [(DeadLetterReason::MalformedJson, 11)]);
    let proposed = config::load_rules_str(
        Path::new("proposed.toml"),
        &THRESHOLDS
            .replace("above = 1.0", "above = 1.2")
            .replace("id = \"co-high\"", "id = \"co-alarm\""),
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let bar = indicatif::ProgressBar::hidden();
    let current = replay::run(&schedule, &settings, &loaded.rules, &bar).expect("current");
    let after = replay::run(&schedule, &settings, &proposed, &bar).expect("proposed");
    let at = |s: u64| 1_795_939_200_000 + s * 1000; // 2026-11-29T08:00:00Z + s
    let changes = replay::compare(&current.transitions, &after.transitions);
    let episode = |entity: &str, start: u64, end: Option<u64>| replay::compare::Episode {
        entity: entity.into(),
        start: at(start),
        end: end.map(at),
    };
    assert_eq!(
        changes,
        [RuleChange {
            rule: "ch4-alarm".into(),
            before: 2,
            after: 1,
            unchanged: 0,
            added: vec![],
            removed: vec![episode("m/f/b", 0, Some(2))],
            shifted: vec![(episode("m/f/a", 1, Some(3)), episode("m/f/a", 2, Some(3)))],
        }]
    );
}

#[test]
fn seismic_bumps_replay_equals_the_reference() {
    let file = shared_data().join("coalmine/seismic-bumps.arff");
    let t0 = 1_735_711_200_000; // 2025-01-01T06:00:00Z, the mapping's start
    let columns = [
        ("genergy", Metric::SeismicEnergy, "geophone-max"),
        ("nbumps", Metric::SeismicBumps, "bumps"),
        ("senergy", Metric::SeismicEnergy, "bumps-energy"),
    ];
    let (readings, registry) = arff_sensors(
        &file,
        "polish-mine-2",
        "polish-mine-2/longwall",
        &columns,
        t0,
        8 * 3_600_000,
    );
    assert_eq!(readings.len(), 3 * 2_584);
    let rules = r#"
[[rule]]
id = "bumps-in-a-shift"
domain = "mine"
metric = "seismic_bumps"
above = 3
clear = 1

[[rule]]
id = "bumps-per-day"
kind = "window"
domain = "mine"
metric = "seismic_bumps"
window = "24h"
group_by = "face"
aggregate = "sum"
above = 5
clear = 2

[[rule]]
id = "energy-rising"
kind = "baseline"
domain = "mine"
metric = "seismic_energy"
baseline = "7d"
above_ratio = 5
clear = 2
"#;
    let loaded = loaded("", rules);
    let input = mapped("seismic-bumps.toml", "coalmine/seismic-bumps.arff");
    let (schedule, run) = replay(&loaded, &[input]);
    assert!(schedule.dead_letters.is_empty());
    let expected = reference(&readings, &registry, &loaded, schedule.end);
    for rule in ["bumps-in-a-shift", "bumps-per-day", "energy-rising"] {
        assert!(
            expected.iter().any(|t| t.rule == rule),
            "{rule} fires on this data"
        );
    }
    assert_eq!(run.transitions, expected);
}
