//! Memory of the rule operators over a long run: state must be bounded by the live entities
//! and the window lengths, not by the events seen. One worker runs every rule kind (threshold,
//! window, rate of rise, baseline, absence, report deadline with an escalation ladder, follow-up)
//! over a fixed population of sensors and a steady stream of citizen reports that are created,
//! resolved and visited, and prints the process's resident set size (RSS, `/proc/self/status`)
//! after each further 1x the events, up to 10x. Readings are generated batch by batch, so the input
//! itself takes no memory. Run with `cargo bench -p citybrain-benches --bench memory`; the
//! results are in `benches/README.md`.
#![allow(missing_docs)]
// The bench's output is its result table.
#![allow(clippy::print_stdout)]
// A bench whose setup fails should stop loudly rather than report numbers of nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use citybrain_benches::workload::{
    CADENCE_MS, START, Workload, ch4_value, engine_rules, sensor_id,
};
use citybrain_model::{AlertTransition, Domain, Metric, ReportKind, Severity};
use citybrain_operators::kinds::absence::AbsenceRule;
use citybrain_operators::kinds::baseline::BaselineRule;
use citybrain_operators::kinds::follow_up::FollowUpRule;
use citybrain_operators::kinds::rate_of_rise::RateOfRiseRule;
use citybrain_operators::kinds::report_deadline::{EscalationStep, ReportDeadlineRule};
use citybrain_operators::ordered_float::OrderedFloat;
use citybrain_operators::report_state::ReportEventRow;
use citybrain_operators::rule::{Direction, RuleRow, ThresholdRule};
use citybrain_operators::{Diff, ReadingRow, RegistryRow, Time, rule_alerts_by_clock_seeded};
use differential_dataflow::input::Input;
use timely::dataflow::operators::{Concatenate, Inspect, Probe};

/// Sensors, each reading once a second of event time.
const SENSORS: usize = 200;
/// Rounds (seconds of event time) of the first checkpoint: 250 s, longer than every window
/// (the longest, the baseline, is 2 min) and every report's lifecycle (about 4 min).
const BASE_ROUNDS: u64 = 250;
/// Checkpoints, in multiples of the first.
const CHECKPOINTS: [u64; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
/// How long a report that needs nothing more is remembered, ms of event time.
const RETENTION_MS: u64 = 300_000;

fn alarm(
    id: &str,
    domain: Domain,
    threshold: f64,
    clear: f64,
    direction: Direction,
) -> ThresholdRule {
    ThresholdRule {
        id: id.into(),
        domain,
        metric: Metric::Ch4,
        scope: vec![],
        direction,
        threshold: OrderedFloat(threshold),
        clear: OrderedFloat(clear),
        hold_ms: 0,
        severity: Severity::Warning,
        summary: id.into(),
        labels: vec![],
    }
}

/// Every kind with its history no longer than 2 minutes.
fn rules() -> Vec<RuleRow> {
    let mut rules = engine_rules();
    rules.push(RuleRow::RateOfRise(RateOfRiseRule {
        alarm: alarm("ch4-rising", Domain::Mine, 0.3, 0.1, Direction::Above),
        window_ms: 60_000,
        min_span_ms: 20_000,
    }));
    rules.push(RuleRow::Baseline(BaselineRule {
        alarm: alarm("ch4-above-usual", Domain::Mine, 1.5, 1.2, Direction::Above),
        baseline_ms: 120_000,
    }));
    rules.push(RuleRow::Absence(AbsenceRule {
        alarm: alarm("ch4-silent", Domain::Mine, 1.0, 1.0, Direction::Above),
        cadences: 5,
        stall_after_ms: None,
    }));
    let mut ladder = ReportDeadlineRule::new(
        alarm("report-ladder", Domain::Citizen, 1.0, 1.0, Direction::Above),
        vec![],
        20_000,
    );
    ladder.category_deadlines = vec![("slow".into(), 30_000)];
    ladder.escalation = vec![
        EscalationStep {
            overdue_ms: 10_000,
            level: 1,
        },
        EscalationStep {
            overdue_ms: 20_000,
            level: 2,
        },
    ];
    rules.push(RuleRow::ReportDeadline(ladder));
    rules.push(RuleRow::FollowUp(FollowUpRule {
        alarm: alarm("follow-up", Domain::Citizen, 1.0, 1.0, Direction::Above),
        categories: vec![],
        due_ms: 90_000,
    }));
    rules
}

/// Report `i` is created at round `i`; odd ones are slow (resolved 60 s later, past the
/// deadline and both ladder steps), even ones resolved after 5 s; every report is visited, half
/// of them in time (60 s after resolution), half late (120 s, after the 90 s follow-up fired).
fn report_events(round: u64) -> Vec<(u64, ReportKind)> {
    let resolve_after = |i: u64| if i % 2 == 1 { 60 } else { 5 };
    let visit_after = |i: u64| if i % 4 < 2 { 60 } else { 120 };
    let mut out = vec![(round, ReportKind::Created)];
    for i in round.saturating_sub(200)..round {
        let resolved = i + resolve_after(i);
        if resolved == round {
            out.push((i, ReportKind::Resolved));
        }
        if resolved + visit_after(i) == round {
            out.push((i, ReportKind::FollowedUp));
        }
    }
    out
}

/// The resident set size of this process, MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let registry: Vec<RegistryRow> = Workload {
        sensors: SENSORS,
        batch: SENSORS,
        events: SENSORS,
    }
    .registry();
    let rules = rules();
    println!(
        "| events | event time | reports | transitions | RSS (MiB) | wall (s) |\n|---|---|---|---|---|---|"
    );
    timely::execute_directly(move |worker| {
        let transitions = Rc::new(Cell::new(0u64));
        let count = Rc::clone(&transitions);
        let (mut readings, mut reports, probe) = worker.dataflow::<Time, _, _>(|scope| {
            let (readings_input, readings) = scope.new_collection::<ReadingRow, Diff>();
            let (_, registry_rows) = scope.new_collection_from(registry.clone());
            let (_, rule_rows) = scope.new_collection_from(rules.clone());
            let (reports_input, reports) = scope.new_collection::<ReportEventRow, Diff>();
            let partitions = citybrain_operators::no_partitions(&rule_rows);
            let (sensor, citizen) = rule_alerts_by_clock_seeded(
                citybrain_operators::matching::events(readings, registry_rows.clone()),
                registry_rows,
                reports,
                partitions,
                rule_rows,
                Default::default(),
                RETENTION_MS,
            );
            let (probe, _) = scope
                .concatenate([sensor, citizen])
                .inspect(move |_: &AlertTransition| count.set(count.get() + 1))
                .probe();
            (readings_input, reports_input, probe)
        });
        println!("| 0 | 0 s | 0 | 0 | {:.1} | 0.0 |", rss_mib());
        let started = Instant::now();
        let mut events = 0u64;
        let mut report_count = 0u64;
        let last = BASE_ROUNDS * CHECKPOINTS[CHECKPOINTS.len() - 1];
        for round in 0..=last {
            let time = START + round * CADENCE_MS;
            readings.advance_to(time);
            reports.advance_to(time);
            for sensor in 0..SENSORS {
                // Every 50th sensor is silent for 30 s of each minute (absence fires, clears).
                if sensor % 50 == 0 && (round / 30) % 2 == 1 {
                    continue;
                }
                let value = ch4_value(sensor, round);
                readings.insert((
                    (Domain::Mine, sensor_id(sensor)),
                    (Metric::Ch4, OrderedFloat(value)),
                ));
                events += 1;
            }
            for (report, kind) in report_events(round) {
                let category = if report % 2 == 1 { "slow" } else { "fast" };
                let row = (
                    format!("R-{report}"),
                    (kind, category.to_string(), "grid-1".to_string(), None),
                );
                reports.insert(row);
                events += 1;
                report_count += u64::from(kind == ReportKind::Created);
            }
            let next = time + 1;
            readings.advance_to(next);
            reports.advance_to(next);
            readings.flush();
            reports.flush();
            while probe.less_than(&next) {
                worker.step();
            }
            if round > 0 && round % BASE_ROUNDS == 0 && CHECKPOINTS.contains(&(round / BASE_ROUNDS))
            {
                println!(
                    "| {events} | {} s | {report_count} | {} | {:.1} | {:.1} |",
                    round,
                    transitions.get(),
                    rss_mib(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
    });
}
