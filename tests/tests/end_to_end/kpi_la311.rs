//! KPI correctness on real data: Los Angeles 311 service requests
//! (`../shared/data/la311/test_requests.csv`) replayed as citizen reports (created at
//! `createddate`, resolved at `closeddate`, grid = council district). Backlog per council
//! district, closure rate and median hours to resolve per request type, at several points in
//! time, must equal a reference computed here from the file with plain loops.

#![allow(clippy::expect_used)] // test helpers: a bad data file must fail the test loudly

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use citybrain_model::{Domain, EntityInfo, ReportKind};
use citybrain_operators::kpi::{
    Aggregate, KpiDef, KpiSource, KpiSources, KpiValue, kpi_values, with_registry_labels,
};
use citybrain_operators::report_state::ReportStates;
use citybrain_tests::shared_data;
use differential_dataflow::input::Input;

/// One service request of the file.
pub(crate) struct Request {
    /// `srnumber`.
    pub(crate) id: String,
    /// `requesttype`.
    pub(crate) kind: String,
    /// `CD <cd>`, when the council district is given.
    pub(crate) district: Option<String>,
    /// `nc` (neighbourhood council number), when given.
    pub(crate) nc: Option<String>,
    /// `createddate`, epoch ms (read as UTC).
    pub(crate) created: u64,
    /// `closeddate`, epoch ms, when closed.
    pub(crate) closed: Option<u64>,
}

/// Epoch ms of a `1/1/20 0:05` timestamp, read as UTC.
pub(crate) fn parse_time(text: &str) -> u64 {
    let t = chrono::NaiveDateTime::parse_from_str(text, "%m/%d/%y %H:%M")
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    u64::try_from(t.and_utc().timestamp_millis()).expect("after 1970")
}

/// Every request of `la311/test_requests.csv`, in file order.
pub(crate) fn requests() -> Vec<Request> {
    let path = shared_data().join("la311/test_requests.csv");
    let mut reader =
        csv::Reader::from_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let headers = reader.headers().expect("header").clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    };
    let (id, kind, created, closed, cd, nc) = (
        column("srnumber"),
        column("requesttype"),
        column("createddate"),
        column("closeddate"),
        column("cd"),
        column("nc"),
    );
    reader
        .records()
        .map(|record| {
            let record = record.expect("csv row");
            Request {
                id: record[id].to_string(),
                kind: record[kind].to_string(),
                district: Some(record[cd].trim())
                    .filter(|d| !d.is_empty())
                    .map(|d| format!("CD {d}")),
                nc: Some(record[nc].trim())
                    .filter(|n| !n.is_empty())
                    .map(str::to_string),
                created: parse_time(&record[created]),
                closed: Some(record[closed].trim())
                    .filter(|c| !c.is_empty())
                    .map(parse_time),
            }
        })
        .collect()
}

/// The reference at time `t` (inclusive): (backlog per district, closure rate, median hours
/// to resolve per request type: nearest rank).
fn reference(requests: &[Request], t: u64) -> (BTreeMap<String, f64>, f64, BTreeMap<String, f64>) {
    let mut backlog: BTreeMap<String, f64> = BTreeMap::new();
    let mut created = 0usize;
    let mut closed = 0usize;
    let mut durations: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in requests.iter().filter(|r| r.created <= t) {
        created += 1;
        match r.closed.filter(|c| *c <= t) {
            Some(c) => {
                closed += 1;
                durations
                    .entry(r.kind.clone())
                    .or_default()
                    .push((c - r.created) as f64 / 3_600_000.0);
            }
            None => {
                *backlog
                    .entry(r.district.clone().unwrap_or_else(|| "unknown".into()))
                    .or_default() += 1.0;
            }
        }
    }
    let medians = durations
        .into_iter()
        .map(|(kind, mut d)| {
            d.sort_by(f64::total_cmp);
            let rank = (0.5 * d.len() as f64).ceil() as usize;
            (kind, d[rank.max(1) - 1])
        })
        .collect();
    (backlog, closed as f64 / created as f64, medians)
}

fn defs() -> Vec<KpiDef> {
    let status = |s: &str| vec![("status".to_string(), s.to_string())];
    vec![
        KpiDef {
            name: "open_backlog".into(),
            source: KpiSource::Reports,
            filter: status("open"),
            group_by: Some("district".into()),
            aggregate: Aggregate::Count,
            window_ms: None,
        },
        KpiDef {
            name: "closure_rate".into(),
            source: KpiSource::Reports,
            filter: Vec::new(),
            group_by: None,
            aggregate: Aggregate::Ratio(status("resolved")),
            window_ms: None,
        },
        KpiDef {
            name: "resolve_hours_p50".into(),
            source: KpiSource::Reports,
            filter: status("resolved"),
            group_by: Some("category".into()),
            aggregate: Aggregate::Percentile(50),
            window_ms: None,
        },
    ]
}

#[test]
fn backlog_closure_rate_and_median_time_to_resolve_equal_the_file() {
    let requests = requests();
    assert_eq!(requests.len(), 10_000);
    assert_eq!(
        requests.iter().filter(|r| r.closed.is_some()).count(),
        9_951,
        "the data README's count"
    );
    let day = 86_400_000;
    let t0 = parse_time("1/1/20 0:00");
    let checkpoints = [
        t0 + day / 2,
        t0 + day,
        t0 + 2 * day + 7 * 3_600_000,
        t0 + 30 * day,
        t0 + 240 * day,
    ];

    let events: Vec<(u64, String, ReportKind, String, String)> = requests
        .iter()
        .flat_map(|r| {
            let grid = r
                .district
                .clone()
                .map_or_else(|| "cd-none".to_string(), |d| d.replace("CD ", "cd-"));
            let mut out = vec![(
                r.created,
                r.id.clone(),
                ReportKind::Created,
                r.kind.clone(),
                grid.clone(),
            )];
            if let Some(c) = r.closed {
                out.push((c, r.id.clone(), ReportKind::Resolved, r.kind.clone(), grid));
            }
            out
        })
        .collect();
    let districts: std::collections::BTreeSet<String> =
        requests.iter().filter_map(|r| r.district.clone()).collect();

    let got: Vec<HashMap<(String, String), f64>> = timely::execute_directly(move |worker| {
        let updates: Rc<RefCell<Vec<(KpiValue, u64, isize)>>> = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&updates);
        let (mut report_input, mut registry_input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (report_input, events) = scope.new_collection();
            let (registry_input, registry) = scope.new_collection();
            let reports = with_registry_labels(events.report_states(), registry);
            let sources = KpiSources {
                readings: None,
                latest: None,
                alerts: None,
                reports: Some(reports),
                report_events: None,
            };
            let (probe, _) = kpi_values(&sources, &defs())
                .expect("kpis")
                .inspect(move |update| sink.borrow_mut().push(update.clone()))
                .probe();
            (report_input, registry_input, probe)
        });
        for district in districts {
            let grid = district.replace("CD ", "cd-");
            let info = EntityInfo::new([("district", Some(district))], 0);
            registry_input.insert(((Domain::Citizen, grid.into()), info));
        }
        registry_input.close();
        for (time, id, kind, category, grid) in events {
            report_input.update_at((id, (kind, category, grid, None)), time, 1);
        }
        let mut results = Vec::new();
        for t in checkpoints {
            report_input.advance_to(t + 1);
            report_input.flush();
            while probe.less_than(&(t + 1)) {
                worker.step();
            }
            let mut at: HashMap<(String, String), HashMap<u64, isize>> = HashMap::new();
            for ((key, value), time, diff) in updates.borrow().iter() {
                if *time <= t {
                    *at.entry(key.clone())
                        .or_default()
                        .entry(value.0.to_bits())
                        .or_default() += diff;
                }
            }
            let values = at
                .into_iter()
                .filter_map(|(key, counts)| {
                    let live: Vec<u64> = counts
                        .into_iter()
                        .filter(|(_, n)| *n != 0)
                        .map(|(v, n)| {
                            assert_eq!(n, 1, "one value per KPI group");
                            v
                        })
                        .collect();
                    assert!(live.len() <= 1, "{key:?} has {} values", live.len());
                    live.first().map(|v| (key, f64::from_bits(*v)))
                })
                .collect();
            results.push(values);
        }
        results
    });

    for (t, snapshot) in checkpoints.iter().zip(&got) {
        let (backlog, closure, medians) = reference(&requests, *t);
        let pick = |name: &str| -> BTreeMap<String, f64> {
            snapshot
                .iter()
                .filter(|((k, _), _)| k == name)
                .map(|((_, g), v)| (g.clone(), *v))
                .collect()
        };
        assert_eq!(pick("open_backlog"), backlog, "backlog per district at {t}");
        assert_eq!(
            pick("closure_rate"),
            BTreeMap::from([(String::new(), closure)]),
            "closure rate at {t}"
        );
        assert_eq!(
            pick("resolve_hours_p50"),
            medians,
            "median hours to resolve at {t}"
        );
    }
}
