//! Citizen reports through Kafka and the engine.
//!
//! - The escalation ladder on real data: Los Angeles 311 service requests
//!   (`../shared/data/la311/test_requests.csv`), each `created` at `createddate` and `resolved`
//!   at `closeddate`, produced slightly out of order (within the allowed lateness); the
//!   neighbourhood council is the village, the council district the town, Los Angeles the
//!   district above. A deadline per request type and a ladder of 2 days -> town, 7 days ->
//!   district: the transitions (time, report, state, level, town, district) must equal a
//!   reference computed here from the file with plain loops.
//! - Events of unknown reports become dead letters (`unknown_report`) with the original
//!   message, once the citizen clock has passed them; a `created` that arrives later but
//!   within the allowed lateness makes its report known.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use citybrain_model::TransitionState;
use citybrain_tests::{MockKafka, SeededRandom, TOPICS, TestEngine, test_config};

use crate::kpi_la311::{Request, parse_time, requests};

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;

/// The deadline of each request type (every type of the file has one), in days.
const DEADLINE_DAYS: [(&str, u64); 11] = [
    ("Bulky Items", 5),
    ("Dead Animal Removal", 1),
    ("Electronic Waste", 5),
    ("Graffiti Removal", 3),
    ("Homeless Encampment", 7),
    ("Illegal Dumping Pickup", 5),
    ("Metal/Household Appliances", 5),
    ("Multiple Streetlight Issue", 10),
    ("Other", 3),
    ("Report Water Waste", 2),
    ("Single Streetlight Issue", 10),
];

/// The ladder: (days past the deadline, level).
const LADDER: [(u64, &str); 2] = [(2, "town"), (7, "district")];

pub(crate) fn rules_toml() -> String {
    let deadlines: Vec<String> = DEADLINE_DAYS
        .iter()
        .map(|(kind, days)| format!("\"{kind}\" = \"{days}d\""))
        .collect();
    let steps: Vec<String> = LADDER
        .iter()
        .map(|(days, level)| format!("{{ overdue = \"{days}d\", level = \"{level}\" }}"))
        .collect();
    format!(
        r#"
[[rule]]
id = "la311-ladder"
kind = "report_deadline"
domain = "citizen"
category_deadlines = {{ {} }}
escalation = [{}]
summary = "{{category}} request {{entity}} unresolved for {{value}} h, at {{level}} level ({{town}})"
"#,
        deadlines.join(", "),
        steps.join(", ")
    )
}

/// The town (council district) of a request.
fn town(r: &Request) -> String {
    r.district
        .as_deref()
        .map_or_else(|| "cd-none".to_string(), |d| d.replace("CD ", "cd-"))
}

/// The grid (neighbourhood council within its council district) of a request.
fn grid(r: &Request) -> String {
    format!("{}/nc-{}", town(r), r.nc.as_deref().unwrap_or("none"))
}

/// A transition as compared: (time, report, state, level, town, district).
type Seen = (u64, String, TransitionState, String, String, String);

/// The ladder's transitions, computed from the requests with plain loops: the deadline fires
/// at the village level, each step past it resolves the lower level and fires the next, and
/// the close resolves whatever fires; a close at a step's exact time is in time for it.
fn reference(requests: &[Request]) -> Vec<Seen> {
    let deadline: BTreeMap<&str, u64> = DEADLINE_DAYS.iter().map(|(k, d)| (*k, d * DAY)).collect();
    let mut out = Vec::new();
    for r in requests {
        let Some(d) = deadline.get(r.kind.as_str()) else {
            panic!("no deadline for {}", r.kind);
        };
        let due = r.created + d;
        let mut steps = vec![(due, "village")];
        for (days, level) in LADDER {
            steps.push((due + days * DAY, level));
        }
        let end = r.closed.unwrap_or(u64::MAX);
        let mut level: Option<&str> = None;
        let mut push = |time: u64, state: TransitionState, level: &str| {
            out.push((
                time,
                r.id.clone(),
                state,
                level.to_string(),
                town(r),
                "los-angeles".to_string(),
            ));
        };
        for (at, to) in steps {
            if at < end {
                if let Some(from) = level {
                    push(at, TransitionState::Resolved, from);
                }
                push(at, TransitionState::Firing, to);
                level = Some(to);
            }
        }
        if let (Some(from), Some(closed)) = (level, r.closed) {
            push(closed, TransitionState::Resolved, from);
        }
    }
    out.sort();
    out
}

/// Produces the grids of `requests` (to `registry.grids`) and their `created` and `resolved`
/// events (to `citizen.reports`), each up to 4 minutes of event time after later ones (the
/// allowed lateness is 5 minutes: a `resolved` often comes before its `created`), then a
/// sentinel report of no watched type a day after every timer of the ladder rule, which moves
/// the report clock past them all.
pub(crate) fn produce_la311(kafka: &MockKafka, requests: &[Request]) {
    let grids: BTreeSet<(String, String, String)> = requests
        .iter()
        .map(|r| {
            let village = format!("nc-{}", r.nc.as_deref().unwrap_or("none"));
            (grid(r), village, town(r))
        })
        .collect();
    for (id, village, town) in &grids {
        let record = serde_json::json!({
            "village": village, "town": town, "district": "los-angeles",
        });
        kafka.produce(
            "registry.grids",
            Some(id),
            Some(record.to_string().as_bytes()),
        );
    }
    let mut jitter = SeededRandom(311);
    let mut events: Vec<(u64, String, String)> = Vec::new();
    for r in requests {
        let g = grid(r);
        let created = event(&r.id, r.created, "created", &r.kind, &g);
        events.push((
            r.created + jitter.between(0, 240_000),
            r.id.clone(),
            created,
        ));
        if let Some(closed) = r.closed {
            let resolved = event(&r.id, closed, "resolved", &r.kind, &g);
            events.push((closed + jitter.between(0, 240_000), r.id.clone(), resolved));
        }
    }
    events.sort();
    for (_, id, message) in &events {
        kafka.produce("citizen.reports", Some(id), Some(message.as_bytes()));
    }
    let longest_deadline = DEADLINE_DAYS.iter().map(|(_, d)| d).max().copied();
    let top_step = LADDER.iter().map(|(d, _)| d).max().copied();
    let last_timer = longest_deadline.unwrap_or(0) + top_step.unwrap_or(0);
    let last = requests
        .iter()
        .map(|r| r.closed.unwrap_or(0).max(r.created + last_timer * DAY))
        .max()
        .unwrap_or_default();
    let sentinel = event("sentinel", last + DAY, "created", "sentinel", "none");
    kafka.produce(
        "citizen.reports",
        Some("sentinel"),
        Some(sentinel.as_bytes()),
    );
    kafka.flush();
}

fn event(report: &str, time: u64, kind: &str, category: &str, grid: &str) -> String {
    serde_json::json!({
        "report": report,
        "ts": time,
        "kind": kind,
        "category": category,
        "grid": grid,
        "unit": null,
    })
    .to_string()
}

#[test]
fn la311_escalation_ladder_equals_the_file() {
    let requests = requests();
    assert_eq!(requests.len(), 10_000);
    let expected = reference(&requests);
    let count = |level: &str| {
        expected
            .iter()
            .filter(|s| s.2 == TransitionState::Firing && s.3 == level)
            .count()
    };
    // The data exercises every step of the ladder.
    let fired = (count("village"), count("town"), count("district"));
    assert!(
        fired.0 > fired.1 && fired.1 > fired.2 && fired.2 > 0,
        "{fired:?}"
    );

    let last = requests
        .iter()
        .filter_map(|r| r.closed)
        .max()
        .unwrap_or_default();
    assert!(
        last > parse_time("8/1/20 0:00"),
        "closes run into August 2020"
    );
    let kafka = MockKafka::new(&TOPICS);
    produce_la311(&kafka, &requests);

    let engine = TestEngine::start(&test_config(&kafka.brokers), &rules_toml());
    let got = engine.wait_until(Duration::from_secs(300), |t, _| t.len() >= expected.len());
    std::thread::sleep(Duration::from_millis(500));
    let (file, dead_letters) = engine.stop();
    assert!(dead_letters.is_empty(), "{:?}", dead_letters.first());
    assert_eq!(
        file.len(),
        got.len(),
        "the alerts file holds every transition"
    );
    let ids: BTreeSet<&str> = got.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "transition ids are unique");
    let mut seen: Vec<Seen> = got
        .iter()
        .map(|t| {
            let label = |name: &str| t.labels.get(name).cloned().unwrap_or_default();
            (
                t.event_time,
                t.entity.clone(),
                t.state,
                label("level"),
                label("town"),
                label("district"),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(seen.len(), expected.len());
    assert_eq!(seen, expected);
    // One escalation in full: the summary names the level and the town it is routed to.
    let first_town = got
        .iter()
        .filter(|t| {
            t.state == TransitionState::Firing
                && t.labels.get("level").map(String::as_str) == Some("town")
        })
        .min_by_key(|t| (t.event_time, t.entity.clone()));
    let request = first_town.and_then(|t| requests.iter().find(|r| r.id == t.entity));
    let (Some(t), Some(r)) = (first_town, request) else {
        panic!("no town-level transition");
    };
    let hours = (t.event_time - r.created) as f64 / HOUR as f64;
    assert_eq!(t.value, hours);
    assert_eq!(
        t.summary,
        format!(
            "{} request {} unresolved for {} h, at town level ({})",
            r.kind,
            r.id,
            citybrain_operators::hysteresis::display_value(hours),
            town(r)
        )
    );
}

#[test]
fn events_of_unknown_reports_are_dead_letters() {
    // 2026-11-01T00:00:00Z.
    let t0: u64 = 1_793_491_200_000;
    let s = 1_000;
    let kafka = MockKafka::new(&TOPICS);
    let messages = [
        // R-1: `dispatched` first, its `created` (earlier event time) within the lateness.
        (
            "R-1",
            event("R-1", t0 + 20 * s, "dispatched", "road_damage", "g"),
        ),
        (
            "R-1",
            event("R-1", t0 + 10 * s, "created", "road_damage", "g"),
        ),
        // R-2: never created.
        (
            "R-2",
            event("R-2", t0 + 30 * s, "resolved", "road_damage", "g"),
        ),
        // R-3: never created, the same event twice: two messages, two dead letters.
        (
            "R-3",
            event("R-3", t0 + 40 * s, "escalated", "land_dispute", "g"),
        ),
        (
            "R-3",
            event("R-3", t0 + 40 * s, "escalated", "land_dispute", "g"),
        ),
        // R-4: dispatched before it was created (in event time).
        (
            "R-4",
            event("R-4", t0 + 100 * s, "created", "road_damage", "g"),
        ),
        (
            "R-4",
            event("R-4", t0 + 50 * s, "dispatched", "road_damage", "g"),
        ),
        // R-5: known; a follow-up visit of a report still open is no dead letter.
        (
            "R-5",
            event("R-5", t0 + 60 * s, "created", "road_damage", "g"),
        ),
        (
            "R-5",
            event("R-5", t0 + 70 * s, "followed_up", "road_damage", "g"),
        ),
        // Moves the report clock past every event above.
        (
            "R-6",
            event("R-6", t0 + 3_600 * s, "created", "road_damage", "g"),
        ),
    ];
    for (key, message) in &messages {
        kafka.produce("citizen.reports", Some(key), Some(message.as_bytes()));
    }
    kafka.flush();
    let engine = TestEngine::start(&test_config(&kafka.brokers), "");
    engine.wait_until(Duration::from_secs(60), |_, dead| dead >= 4);
    std::thread::sleep(Duration::from_millis(500));
    let (alerts, dead_letters) = engine.stop();
    assert!(alerts.is_empty());
    let mut got: Vec<(i64, String, String, Option<String>)> = dead_letters
        .iter()
        .map(|d| {
            (
                d.offset,
                d.reason.as_str().to_string(),
                d.topic.clone(),
                d.payload_utf8.clone(),
            )
        })
        .collect();
    got.sort();
    let expected: Vec<(i64, String, String, Option<String>)> = [2, 3, 4, 6]
        .into_iter()
        .map(|offset: usize| {
            (
                offset as i64,
                "unknown_report".to_string(),
                "citizen.reports".to_string(),
                Some(messages[offset].1.clone()),
            )
        })
        .collect();
    assert_eq!(got, expected);
    let r4 = dead_letters
        .iter()
        .find(|d| d.offset == 6)
        .map(|d| d.detail.clone());
    assert_eq!(
        r4.as_deref(),
        Some(
            "report `R-4` was never created (or was forgotten): its `dispatched` event at 2026-11-01T00:00:50.000Z is not applied"
        )
    );
}
