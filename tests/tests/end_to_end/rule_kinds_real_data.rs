//! Real data through Kafka and the engine with the rule kinds beyond thresholds (window, rate
//! of rise, baseline, correlation). The alert transitions must equal, one for one and field
//! for field (ids, values, summaries, labels), the plain-loop reference of
//! `citybrain_operators::reference` over the readings of the file.
//!
//! - `../shared/data/coalmine/methane.arff`: MM116 (% CH4) and AS038 (air velocity, m/s) as
//!   two sensors of one working face, one row every 30 s (~6.6 days).
//! - `../shared/data/cows/sample_data.csv`: a dairy cow's activity collar (Motion Index per
//!   minute, ~16 days) as one farm device.
//! - `../shared/data/greenhouse/`: tunnel greenhouse 1, TRH_1.csv (air temperature and
//!   relative humidity every 15 minutes, whose timestamps go back by about an hour in three
//!   places) and Ref_WaterCont.csv (substrate water content), replayed in file order, the two
//!   files merged by time (the 2,233 `NaN` rows of the water file, gaps in the record, are
//!   left out); window and baseline rules against the reference over the readings, which
//!   sorts them.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use citybrain_engine::config;
use citybrain_model::registry::{DeviceRecord, SensorRecord};
use citybrain_model::{AlertTransition, Domain, EntityInfo, Metric, Reading};
use citybrain_operators::EntityKey;
use citybrain_operators::reference::{rule_transitions, sort_transitions};
use citybrain_operators::rule::RuleRow;
use citybrain_tests::{MockKafka, TOPICS, TestEngine, arff_column, shared_data, test_config};

/// 2026-11-01T00:00:00Z: row i of the methane file is at T0 + 30 s * i.
const T0: u64 = 1_793_491_200_000;
const ROW_MS: u64 = 30_000;

const FACE: &str = "polish-mine/face-116";

pub(crate) const MINE_RULES: &str = r#"
[[rule]]
id = "ch4-avg-5m"
kind = "window"
domain = "mine"
metric = "ch4"
window = "5m"
hop = "1m"
group_by = "face"
aggregate = "avg"
above = 1.2
clear = 1.0

[[rule]]
id = "ch4-p90-10m"
kind = "window"
domain = "mine"
metric = "ch4"
window = "10m"
aggregate = "p90"
above = 1.3
clear = 1.1
for = "10m"
severity = "critical"

[[rule]]
id = "ch4-rising"
kind = "rate_of_rise"
domain = "mine"
metric = "ch4"
window = "3m"
min_span = "1m"
above = 0.3
clear = 0.1

[[rule]]
id = "ch4-above-baseline"
kind = "baseline"
domain = "mine"
metric = "ch4"
baseline = "1h"
above_ratio = 1.5
clear = 1.2

[[rule]]
id = "ventilation-failure-with-methane"
kind = "correlation"
domain = "mine"
metric = "ch4"
above = 1.0
clear = 0.9
with = { metric = "air_velocity", below = 2.0, clear = 2.1 }
group_by = "face"
tolerance = "1m"
severity = "critical"
summary = "Ventilation failure with methane on {face}: CH4 {ch4}%, air velocity {air_velocity} m/s"
"#;

pub(crate) const FARM_RULES: &str = r#"
[[rule]]
id = "cow-inactive"
kind = "baseline"
domain = "farm"
metric = "activity"
baseline = "24h"
below_ratio = 0.5
clear = 0.7
for = "2h"
summary = "{animal} at {value} of its 24 h activity"

[[rule]]
id = "herd-quiet"
kind = "window"
domain = "farm"
metric = "activity"
window = "1h"
hop = "15m"
group_by = "herd"
aggregate = "avg"
below = 1
clear = 3
"#;

const GREENHOUSE_RULES: &str = r#"
[[rule]]
id = "greenhouse-hot-hour"
kind = "window"
domain = "farm"
metric = "air_temp"
scope = { greenhouse = "italy-farm/gh-1" }
window = "1h"
hop = "15m"
group_by = "greenhouse"
aggregate = "avg"
above = 32
clear = 30
summary = "{greenhouse} averaged {value} C over an hour"

[[rule]]
id = "greenhouse-humid"
kind = "window"
domain = "farm"
metric = "humidity"
scope = { greenhouse = "italy-farm/gh-1" }
window = "2h"
group_by = "greenhouse"
aggregate = "p90"
above = 97
clear = 90
for = "2h"

[[rule]]
id = "irrigation-needed"
kind = "window"
domain = "farm"
metric = "soil_water"
scope = { greenhouse = "italy-farm/gh-1" }
window = "30m"
group_by = "greenhouse"
aggregate = "max"
below = 15
clear = 18
summary = "Irrigation needed in {greenhouse}"

[[rule]]
id = "substrate-drying"
kind = "baseline"
domain = "farm"
metric = "soil_water"
scope = { greenhouse = "italy-farm/gh-1" }
baseline = "24h"
below_ratio = 0.7
clear = 0.85
for = "30m"

[[rule]]
id = "greenhouse-warmer-than-usual"
kind = "baseline"
domain = "farm"
metric = "air_temp"
scope = { greenhouse = "italy-farm/gh-1" }
baseline = "6h"
above_ratio = 1.5
clear = 1.2
"#;

/// (epoch ms, fields) of each data row of a greenhouse file, in file order; `at` is the
/// timestamp column and `format` its chrono format (local times read as UTC).
fn greenhouse_rows(file: &str, at: usize, format: &str) -> Vec<(u64, Vec<String>)> {
    let path = shared_data().join("greenhouse").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<String> = line.split(',').map(|f| f.trim().to_string()).collect();
            let stamp = fields.get(at).unwrap_or_else(|| panic!("{file}: {line}"));
            let time = chrono::NaiveDateTime::parse_from_str(stamp, format)
                .unwrap_or_else(|e| panic!("{file}: {stamp}: {e}"));
            let ms = u64::try_from(time.and_utc().timestamp_millis())
                .unwrap_or_else(|e| panic!("{stamp}: {e}"));
            (ms, fields)
        })
        .collect()
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (epoch ms, Motion Index) of each row of the cow collar file (local times read as UTC).
fn cow_rows() -> Vec<(u64, f64)> {
    let path = shared_data().join("cows/sample_data.csv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rows = Vec::new();
    for line in text.lines().skip(8) {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(date), Some(time), Some(motion)) = (fields.first(), fields.get(1), fields.get(2))
        else {
            continue;
        };
        if date.is_empty() {
            continue;
        }
        let number = |s: &str| -> i64 { s.parse().unwrap_or_else(|e| panic!("{line}: {e}")) };
        let d: Vec<i64> = date.split('.').map(number).collect();
        let t: Vec<i64> = time.split(':').map(number).collect();
        let (&[day, month, year], &[h, m, s]) = (d.as_slice(), t.as_slice()) else {
            panic!("bad date or time in {line}");
        };
        let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s;
        let value: f64 = motion.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        rows.push((
            u64::try_from(secs * 1000).unwrap_or_else(|e| panic!("{line}: {e}")),
            value,
        ));
    }
    rows
}

/// Runs the engine on `readings` (produced in order) and returns its transitions, sorted.
/// `farm_lateness` replaces the test config's allowed lateness of the farm stream.
fn through_kafka(
    readings: &[Reading],
    registry: &[(&str, &str, String)],
    rules_toml: &str,
    expected: usize,
    farm_lateness: Option<&str>,
) -> Vec<AlertTransition> {
    // The mock cluster keeps at most 5 MB per partition and silently drops the oldest
    // messages beyond that (librdkafka's rdkafka_mock.c): the greenhouse case's 43k readings
    // (~5.2 MB) on one partition lost its first two months. Spread over 8 partitions, keyed by
    // device, no partition comes near the limit.
    let topics = TOPICS.map(|(topic, partitions)| match topic {
        "farm.readings" | "mine.readings" => (topic, 8),
        _ => (topic, partitions),
    });
    let kafka = MockKafka::new(&topics);
    for (topic, key, record) in registry {
        kafka.produce(topic, Some(key), Some(record.as_bytes()));
    }
    for r in readings {
        let (topic, id_field) = match r.domain {
            Domain::Mine => ("mine.readings", "sensor"),
            _ => ("farm.readings", "device"),
        };
        let message = format!(
            r#"{{"{id_field}":"{}","ts":{},"metric":"{}","value":{}}}"#,
            r.entity,
            r.time,
            r.metric.as_str(),
            r.value
        );
        kafka.produce(topic, Some(&r.entity), Some(message.as_bytes()));
    }
    kafka.flush();
    let mut config = test_config(&kafka.brokers);
    if let Some(lateness) = farm_lateness {
        config = config.replace(
            "[sources.farm]\nallowed_lateness = \"100ms\"",
            &format!("[sources.farm]\nallowed_lateness = \"{lateness}\""),
        );
        assert!(config.contains(lateness), "the farm lateness is set");
    }
    let engine = TestEngine::start(&config, rules_toml);
    // Generous for a loaded 2-core machine; the wait ends as soon as every transition is in.
    let got = engine.wait_until(Duration::from_secs(240), |t, _| t.len() >= expected);
    // A little longer: nothing beyond the expected may arrive.
    std::thread::sleep(Duration::from_millis(500));
    let (file_transitions, dead_letters) = engine.stop();
    assert!(
        dead_letters.is_empty(),
        "no dead letters expected: {} of them, the first {:?}",
        dead_letters.len(),
        dead_letters.first()
    );
    assert_eq!(
        file_transitions.len(),
        got.len(),
        "the alerts file holds every transition"
    );
    let mut got = got;
    sort_transitions(&mut got);
    got
}

/// Every rule must have fired at least once, or the data does not exercise it.
fn assert_every_rule_fires(rules: &[RuleRow], expected: &[AlertTransition]) {
    for rule in rules {
        let n = expected.iter().filter(|t| t.rule == rule.id()).count();
        assert!(
            n >= 2,
            "rule {} has {n} transitions on this data",
            rule.id()
        );
    }
}

#[test]
fn methane_windows_rates_baseline_and_correlation_equal_the_reference() {
    let file = shared_data().join("coalmine/methane.arff");
    let mm116 = arff_column(&file, "MM116");
    let as038 = arff_column(&file, "AS038");
    assert_eq!((mm116.len(), as038.len()), (19_096, 19_096));

    let rules = config::load_rules_str(Path::new("mine.toml"), MINE_RULES)
        .unwrap_or_else(|d| panic!("rules: {d}"));
    let sensors = [("MM116", Metric::Ch4), ("AS038", Metric::AirVelocity)];
    let mut registry: HashMap<EntityKey, EntityInfo> = HashMap::new();
    let mut records = Vec::new();
    for (sensor, kind) in sensors {
        let record = SensorRecord {
            sensor: None,
            mine: "polish-mine".into(),
            face: FACE.into(),
            kind,
            cadence_ms: ROW_MS,
        };
        let json = serde_json::to_string(&record).unwrap_or_else(|e| panic!("record: {e}"));
        records.push(("registry.sensors", sensor, json));
        registry.insert((Domain::Mine, sensor.into()), record.into());
    }
    let mut readings = Vec::new();
    for (i, (ch4, velocity)) in mm116.iter().zip(&as038).enumerate() {
        let time = T0 + ROW_MS * i as u64;
        for ((sensor, metric), value) in sensors.iter().zip([*ch4, *velocity]) {
            readings.push(Reading {
                domain: Domain::Mine,
                entity: (*sensor).into(),
                metric: *metric,
                value,
                time,
            });
        }
    }

    let expected = rule_transitions(&readings, &registry, &rules);
    assert_every_rule_fires(&rules, &expected);
    let got = through_kafka(&readings, &records, MINE_RULES, expected.len(), None);
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);
    let correlation = expected
        .iter()
        .find(|t| t.rule == "ventilation-failure-with-methane")
        .map(|t| {
            (
                t.entity.as_str(),
                t.summary
                    .starts_with("Ventilation failure with methane on polish-mine/face-116: CH4 "),
            )
        });
    assert_eq!(correlation, Some((FACE, true)));
}

#[test]
fn cow_activity_baseline_and_herd_window_equal_the_reference() {
    let rows = cow_rows();
    assert_eq!(rows.len(), 22_730);
    let rules = config::load_rules_str(Path::new("farm.toml"), FARM_RULES)
        .unwrap_or_else(|d| panic!("rules: {d}"));
    let device = "dairy-farm/collar-50001964/activity";
    let record = DeviceRecord {
        device: None,
        farm: "dairy-farm".into(),
        greenhouse: None,
        herd: Some("dairy-farm/herd-1".into()),
        animal: Some("cow-50001964".into()),
        kind: Metric::Activity,
        cadence_ms: 60_000,
    };
    let json = serde_json::to_string(&record).unwrap_or_else(|e| panic!("record: {e}"));
    let registry: HashMap<EntityKey, EntityInfo> =
        HashMap::from([((Domain::Farm, device.into()), record.into())]);
    let readings: Vec<Reading> = rows
        .iter()
        .map(|(time, value)| Reading {
            domain: Domain::Farm,
            entity: device.into(),
            metric: Metric::Activity,
            value: *value,
            time: *time,
        })
        .collect();

    let expected = rule_transitions(&readings, &registry, &rules);
    assert_every_rule_fires(&rules, &expected);
    let got = through_kafka(
        &readings,
        &[("registry.devices", device, json)],
        FARM_RULES,
        expected.len(),
        None,
    );
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);
    assert!(
        expected
            .iter()
            .filter(|t| t.rule == "cow-inactive")
            .all(|t| t.entity == device && t.summary.starts_with("cow-50001964 at ")),
        "baseline alerts are about the collar and name the animal"
    );
}

#[test]
fn greenhouse_windows_and_baselines_equal_the_reference() {
    const FARM: &str = "italy-farm";
    const GREENHOUSE: &str = "italy-farm/gh-1";
    let number = |text: &str| -> f64 { text.parse().unwrap_or_else(|e| panic!("{text}: {e}")) };
    let trh = greenhouse_rows("TRH_1.csv", 1, "%d/%m/%Y %H:%M:%S");
    let water = greenhouse_rows("Ref_WaterCont.csv", 1, "%Y-%m-%d %H:%M:%S");
    assert_eq!((trh.len(), water.len()), (10_858, 24_156));
    let backwards = trh.windows(2).filter(|w| w[1].0 < w[0].0).count();
    assert_eq!(backwards, 3, "TRH_1.csv goes back in time three times");
    let gaps = water.iter().filter(|(_, f)| f[0] == "NaN").count();
    assert_eq!(gaps, 2_233, "Ref_WaterCont.csv has NaN rows");

    let devices = [
        ("italy-farm/gh-1/air-temp", Metric::AirTemp),
        ("italy-farm/gh-1/humidity", Metric::Humidity),
        ("italy-farm/gh-1/soil-water", Metric::SoilWater),
        // Far after the data, in another greenhouse: moves the farm clock past every window.
        ("italy-farm/gh-2/air-temp", Metric::AirTemp),
    ];
    let mut registry: HashMap<EntityKey, EntityInfo> = HashMap::new();
    let mut records = Vec::new();
    for (device, kind) in devices {
        let greenhouse = device.rsplit_once('/').map(|(g, _)| g.to_string());
        let record = DeviceRecord {
            device: None,
            farm: FARM.into(),
            greenhouse,
            herd: None,
            animal: None,
            kind,
            cadence_ms: 900_000,
        };
        let json = serde_json::to_string(&record).unwrap_or_else(|e| panic!("record: {e}"));
        records.push(("registry.devices", device, json));
        registry.insert((Domain::Farm, device.into()), record.into());
    }
    let reading = |device: usize, time: u64, value: f64| Reading {
        domain: Domain::Farm,
        entity: devices[device].0.into(),
        metric: devices[device].1,
        value,
        time,
    };
    // Each file in its own order, merged by time: a reading that goes back in time comes
    // right after the later ones it follows in its file.
    let mut readings = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < trh.len() || j < water.len() {
        let take_trh = j >= water.len() || (i < trh.len() && trh[i].0 <= water[j].0);
        if take_trh {
            let (time, fields) = &trh[i];
            readings.push(reading(0, *time, number(&fields[2])));
            readings.push(reading(1, *time, number(&fields[3])));
            i += 1;
        } else {
            let (time, fields) = &water[j];
            if fields[0] != "NaN" {
                readings.push(reading(2, *time, number(&fields[0])));
            }
            j += 1;
        }
    }
    let newest = readings.iter().map(|r| r.time).max().unwrap_or_default();
    readings.push(reading(3, newest + 2 * 86_400_000, 20.0));

    let rules = config::load_rules_str(Path::new("greenhouse.toml"), GREENHOUSE_RULES)
        .unwrap_or_else(|d| panic!("rules: {d}"));
    let expected = rule_transitions(&readings, &registry, &rules);
    assert_every_rule_fires(&rules, &expected);
    // The clock goes back by up to an hour: a lateness of 2 h keeps every reading.
    let got = through_kafka(
        &readings,
        &records,
        GREENHOUSE_RULES,
        expected.len(),
        Some("2h"),
    );
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);
    assert!(
        expected
            .iter()
            .filter(|t| t.rule == "irrigation-needed")
            .all(|t| t.entity == GREENHOUSE && t.summary == "Irrigation needed in italy-farm/gh-1"),
        "window alerts are about the greenhouse"
    );
}
