//! The synthetic methane workload of the operator benches: `sensors` CH4 sensors reading once a
//! second, registered with mine/face labels, watched by a threshold rule with a `for` hold and a
//! clear level and by a one-minute average window rule.
//!
//! Events come in batches of `batch` readings, each batch at one logical time (one step of
//! the input); with `batch <= sensors` every sensor still reads once per second of event time.
//! Most sensors read low; every tenth drifts across the alarm levels with a 90 s period, so
//! both rules raise and resolve alerts a few times per sensor and minute, as a bad shift would.

use citybrain_model::{Domain, EntityInfo, Metric, Severity};
use citybrain_operators::kinds::window::{Aggregate, WindowRule};
use citybrain_operators::ordered_float::OrderedFloat;
use citybrain_operators::rule::{Direction, GroupBy, RuleRow, ThresholdRule};
use citybrain_operators::{EntityId, ReadingRow, RegistryRow, Time};

/// Event time of the first batch: a whole minute (2026-11-29T00:00:00Z), so windows align.
pub const START: Time = 1_795_910_400_000;
/// Interval between two readings of one sensor, milliseconds.
pub const CADENCE_MS: u64 = 1_000;
/// Sensors per working face; eight faces per mine.
const SENSORS_PER_FACE: usize = 16;
/// Faces per mine.
const FACES_PER_MINE: usize = 8;

/// Id of the threshold rule: CH4 at or above [`THRESHOLD`] for [`HOLD_MS`].
pub const THRESHOLD_RULE: &str = "ch4-high";
/// Alarm level of the threshold rule, % CH4.
pub const THRESHOLD: f64 = 1.0;
/// Clear level of the threshold rule.
pub const THRESHOLD_CLEAR: f64 = 0.8;
/// `for` hold of the threshold rule, milliseconds.
pub const HOLD_MS: u64 = 2_000;
/// Id of the window rule: the one-minute average at or above [`WINDOW_THRESHOLD`].
pub const WINDOW_RULE: &str = "ch4-avg-1m";
/// Window length (tumbling), milliseconds.
pub const WINDOW_MS: u64 = 60_000;
/// Alarm level of the window rule.
pub const WINDOW_THRESHOLD: f64 = 0.95;
/// Clear level of the window rule.
pub const WINDOW_CLEAR: f64 = 0.85;
/// The label both rules select on.
pub const SCOPE: (&str, &str) = ("kind", "ch4");

/// The shape of one run: how many sensors, how many readings per logical time, how many in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Distinct sensors (keys).
    pub sensors: usize,
    /// Readings per logical time step.
    pub batch: usize,
    /// Readings in the whole run.
    pub events: usize,
}

impl Workload {
    /// Event time between two batches: a sensor reads once per [`CADENCE_MS`], so `batch`
    /// readings cover `batch / sensors` of that (at least 1 ms).
    pub fn step_ms(&self) -> u64 {
        (CADENCE_MS * self.batch as u64 / self.sensors.max(1) as u64).max(1)
    }

    /// Event time the run covers, milliseconds.
    pub fn span_ms(&self) -> u64 {
        self.events.div_ceil(self.batch.max(1)) as u64 * self.step_ms()
    }

    /// The registry: every sensor with its mine, face and kind.
    pub fn registry(&self) -> Vec<RegistryRow> {
        (0..self.sensors)
            .map(|sensor| {
                let face = sensor / SENSORS_PER_FACE;
                let mine = face / FACES_PER_MINE;
                let info = EntityInfo::new(
                    [
                        ("mine", Some(format!("mine-{mine}"))),
                        ("face", Some(format!("mine-{mine}/face-{face}"))),
                        (SCOPE.0, Some(SCOPE.1.to_string())),
                    ],
                    CADENCE_MS,
                );
                ((Domain::Mine, sensor_id(sensor)), info)
            })
            .collect()
    }

    /// The readings, as `(logical time, rows)` batches in time order.
    pub fn batches(&self) -> Vec<(Time, Vec<ReadingRow>)> {
        self.readings()
            .map(|(time, rows)| {
                let rows = rows
                    .map(|(sensor, value)| {
                        (
                            (Domain::Mine, sensor_id(sensor)),
                            (Metric::Ch4, OrderedFloat(value)),
                        )
                    })
                    .collect();
                (time, rows)
            })
            .collect()
    }

    /// [`Workload::batches`] with each reading's event time: its batch's or, `spread`, one
    /// millisecond after the reading before it from the batch's time on (readings of sensors
    /// with clocks of their own; each distinct time costs every frontier-driven operator some
    /// bookkeeping).
    pub fn timed_batches(&self, spread: bool) -> Vec<(Time, Vec<(ReadingRow, Time)>)> {
        self.batches()
            .into_iter()
            .map(|(time, rows)| {
                let rows = (0..)
                    .zip(rows)
                    .map(|(offset, row)| (row, if spread { time + offset } else { time }))
                    .collect();
                (time, rows)
            })
            .collect()
    }

    /// The same readings as `mine.readings` wire JSON, batch by batch.
    pub fn messages(&self) -> Vec<(Time, Vec<Vec<u8>>)> {
        self.readings()
            .map(|(time, rows)| {
                let rows = rows
                    .map(|(sensor, value)| {
                        format!(
                            r#"{{"sensor":"{}","ts":{time},"metric":"ch4","value":{value}}}"#,
                            sensor_id(sensor)
                        )
                        .into_bytes()
                    })
                    .collect();
                (time, rows)
            })
            .collect()
    }

    /// `(time, (sensor index, value) per reading)` per batch.
    fn readings(self) -> impl Iterator<Item = (Time, impl Iterator<Item = (usize, f64)>)> {
        let Workload {
            sensors,
            batch,
            events,
        } = self;
        let (sensors, batch) = (sensors.max(1), batch.max(1));
        let step = self.step_ms();
        (0..events.div_ceil(batch)).map(move |index| {
            let time = START + index as u64 * step;
            let first = index * batch;
            let last = (first + batch).min(events);
            let rows = (first..last).map(move |event| {
                let sensor = event % sensors;
                let round = (event / sensors) as u64;
                (sensor, ch4_value(sensor, round))
            });
            (time, rows)
        })
    }
}

/// The id of sensor `index`.
pub fn sensor_id(index: usize) -> EntityId {
    format!("ch4-{index:06}").into()
}

/// The `round`-th reading of `sensor`, % CH4 rounded to 0.01: quiet sensors read 0.2-0.5,
/// every tenth sensor swings 0.55-1.25 with a 90 s period (phases spread over the sensors).
pub fn ch4_value(sensor: usize, round: u64) -> f64 {
    // Deterministic jitter of -0.03..=0.03 so neighbouring readings differ.
    let jitter = ((sensor as u64 * 7_919 + round * 104_729) % 7) as f64 * 0.01 - 0.03;
    let phase = sensor as f64 * 0.618;
    let seconds = (round * CADENCE_MS) as f64 / 1_000.0;
    let value = if sensor.is_multiple_of(10) {
        0.9 + 0.35 * (std::f64::consts::TAU * seconds / 90.0 + phase).sin()
    } else {
        0.35 + 0.1 * (std::f64::consts::TAU * seconds / 300.0 + phase).sin()
    };
    ((value + jitter) * 100.0).round() / 100.0
}

/// The alarm side shared by both rules, with their levels and hold.
fn alarm(id: &str, threshold: f64, clear: f64, hold_ms: u64) -> ThresholdRule {
    ThresholdRule {
        id: id.into(),
        domain: Domain::Mine,
        metric: Metric::Ch4,
        scope: vec![(SCOPE.0.to_string(), SCOPE.1.to_string())],
        direction: Direction::Above,
        threshold: OrderedFloat(threshold),
        clear: OrderedFloat(clear),
        hold_ms,
        severity: Severity::Critical,
        summary: "CH4 {value}% on {face}".into(),
        labels: vec![("team".into(), "ventilation".into())],
    }
}

/// The engine's rules of the workload: the threshold rule and the window rule.
pub fn engine_rules() -> Vec<RuleRow> {
    vec![
        RuleRow::Threshold(alarm(THRESHOLD_RULE, THRESHOLD, THRESHOLD_CLEAR, HOLD_MS)),
        RuleRow::Window(WindowRule {
            alarm: alarm(WINDOW_RULE, WINDOW_THRESHOLD, WINDOW_CLEAR, 0),
            window_ms: WINDOW_MS,
            hop_ms: WINDOW_MS,
            group_by: GroupBy::Entity,
            aggregate: Aggregate::Avg,
        }),
    ]
}
