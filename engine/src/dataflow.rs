//! The per-worker dataflow: every rule kind over readings, reference data and rules, and every
//! KPI over latest readings, active alerts and citizen report states. Outputs leave through
//! channels to the output thread: alert transitions, and KPI updates with each worker's
//! frontier so the KPI store can apply them one complete logical time at a time; and the
//! events of unknown citizen reports, which the output thread turns into dead letters.

use std::sync::mpsc::Sender;

use citybrain_model::{AlertTransition, Domain, Labels};
use citybrain_operators::active_alerts::ActiveAlerts;
use citybrain_operators::hysteresis::FiringSeed;
use citybrain_operators::instant::IntoInstants;
use citybrain_operators::kpi::{
    KpiDef, KpiRow, KpiSource, KpiSources, KpiValue, insertions, kpi_values, with_registry_labels,
};
use citybrain_operators::latest::Latest;
use citybrain_operators::ordered_float::OrderedFloat;
use citybrain_operators::overdue::MarkOverdue;
use citybrain_operators::report_state::{ReportEventRow, ReportStates, UnknownReportEvent};
use citybrain_operators::rule::RuleRow;
use citybrain_operators::stall::PartitionRow;
use citybrain_operators::{
    Diff, EntityId, EntityKey, ReadingRow, RegistryRow, Time, rule_alerts_by_clock_seeded,
};
use differential_dataflow::input::{Input, InputSession};
use timely::dataflow::ProbeHandle;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Input as _;
use timely::dataflow::operators::vec::input::Handle as VecInputHandle;
use timely::dataflow::operators::vec::map::Map;
use timely::dataflow::operators::{Concat, Exchange, Inspect, Probe};

use crate::kpi::KpiClock;

/// What the dataflow sends to the output thread.
pub enum Output {
    /// An alert transition.
    Alert(AlertTransition),
    /// An unusable input message.
    DeadLetter(citybrain_connectors::dead_letter::DeadLetter),
    /// A citizen report event entered the dataflow from this message (kept until the citizen
    /// clock passes its time, in case the report turns out unknown).
    ReportOrigin(
        Time,
        String,
        citybrain_model::ReportKind,
        citybrain_connectors::dead_letter::Origin,
    ),
    /// An event of a report the dataflow does not know (sent before the citizen alert frontier
    /// passes its time).
    UnknownReport(UnknownReportEvent),
    /// KPI updates of one worker.
    KpiUpdates(KpiClock, Vec<(KpiValue, Time, Diff)>),
    /// A worker's KPI output frontier advanced: all its updates before `time` were sent.
    KpiFrontier(KpiClock, usize, Time),
    /// Every alert transition of the clock before `time` was sent (from every worker).
    AlertFrontier(KpiClock, Time),
    /// An alert transition owned (written and dispatched) by another process of the cluster,
    /// for this process's API and wall only.
    BoardAlert(AlertTransition),
}

/// The inputs of one worker's dataflow.
pub struct Inputs {
    /// Mine and farm readings, each `+1` at its event time.
    pub readings: InputSession<Time, ReadingRow, Diff>,
    /// Reference data.
    pub registry: InputSession<Time, RegistryRow, Diff>,
    /// Rule rows.
    pub rules: InputSession<Time, RuleRow, Diff>,
    /// Citizen report events, each `+1` at its event time.
    pub reports: InputSession<Time, ReportEventRow, Diff>,
    /// Where readings come from: each partition heard from, `+1` at the event times, and each
    /// entity's partition (a set); on the sensor clock, like `readings`. Left empty (but
    /// advanced) by file replays, which have no partitions.
    pub partitions: InputSession<Time, PartitionRow, Diff>,
    /// Per clock (sensors, citizen): advanced to the time before which this worker's process
    /// holds every alert transition it owns durably. The probe on it (the third and fourth of
    /// [`build`]'s probes) sees the least over every worker of the cluster: what may be
    /// committed.
    pub durable: [VecInputHandle<Time, ()>; 2],
}

/// Where a worker sits in the cluster: `local_workers` threads per process.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    /// This worker's process.
    pub process: usize,
    /// Processes in the cluster.
    pub processes: usize,
    /// Worker threads per process.
    pub local_workers: usize,
}

impl Placement {
    /// The placement of `worker` when every process runs `local_workers` threads.
    pub fn of(worker: &timely::worker::Worker, local_workers: usize) -> Self {
        let local_workers = local_workers.max(1);
        Placement {
            process: worker.index() / local_workers,
            processes: (worker.peers() / local_workers).max(1),
            local_workers,
        }
    }

    /// The first worker of `process`: the one that talks to that process's output thread.
    pub fn first_worker(&self, process: usize) -> usize {
        process * self.local_workers
    }
}

/// Which clock a KPI's source follows.
pub fn clock_of(def: &KpiDef) -> KpiClock {
    match def.source {
        KpiSource::Reports | KpiSource::ReportEvents => KpiClock::Citizen,
        KpiSource::Readings | KpiSource::Latest | KpiSource::Alerts => KpiClock::Sensors,
    }
}

fn labeled(
    domain: Domain,
    entity: EntityId,
    pairs: [(&str, String); 3],
    value: f64,
) -> (EntityKey, KpiRow) {
    let mut labels: Labels = pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    labels.sort();
    ((domain, entity), (labels, OrderedFloat(value)))
}

/// Builds the dataflow in `worker`; returns its inputs and probes on the alert outputs of the
/// sensor and the citizen clock, in that order (the citizen probe also covers the unknown
/// report events), the two durability probes (see [`Inputs::durable`]) and a fifth on all the
/// sensor clock's work, alerts and KPIs: what the worker loop waits for before it reads more.
/// Alert keys in `seed` start as firing (after a restart: what the alert log last recorded);
/// citizen reports that need nothing more are forgotten `report_retention_ms` after their
/// last event.
///
/// In a cluster of several processes (`local_workers` threads each), every transition reaches
/// the output thread of the process whose worker owns its key (written and dispatched there
/// only) and, as [`Output::BoardAlert`], the other processes' output threads for their API;
/// KPI updates reach the first worker of every process, which alone sends them on, so each
/// process serves the whole cluster's KPIs at one completed time.
pub fn build(
    worker: &mut timely::worker::Worker,
    kpis: &[KpiDef],
    seed: FiringSeed,
    report_retention_ms: Time,
    sender: &Sender<Output>,
    local_workers: usize,
) -> (Inputs, [ProbeHandle<Time>; 5]) {
    let index = worker.index();
    let placement = Placement::of(worker, local_workers);
    let first_local = index == placement.first_worker(placement.process);
    let alerts_out = sender.clone();
    let kpi_out = sender.clone();
    let (sensor_kpis, citizen_kpis): (Vec<KpiDef>, Vec<KpiDef>) = kpis
        .iter()
        .cloned()
        .partition(|d| clock_of(d) == KpiClock::Sensors);
    worker.dataflow::<Time, _, _>(|scope| {
        let (readings_input, readings) = scope.new_collection::<ReadingRow, Diff>();
        let (registry_input, registry) = scope.new_collection::<RegistryRow, Diff>();
        let (rules_input, rules) = scope.new_collection::<RuleRow, Diff>();
        let (reports_input, reports) = scope.new_collection::<ReportEventRow, Diff>();
        let (partitions_input, partitions) = scope.new_collection::<PartitionRow, Diff>();

        let events = citybrain_operators::matching::events(readings.clone(), registry.clone());
        let (alerts, citizen_alerts) = rule_alerts_by_clock_seeded(
            events.clone(),
            registry.clone(),
            reports.clone(),
            partitions,
            rules,
            seed,
            report_retention_ms,
        );
        let citizen_out = alerts_out.clone();
        if placement.processes > 1 {
            // Copies for the other processes' boards, one to the first worker of each.
            let board_out = alerts_out.clone();
            // As JSON text: between processes timely encodes with bincode, which cannot
            // decode the transition's optional fields that JSON leaves out.
            alerts
                .clone()
                .concat(citizen_alerts.clone())
                .flat_map(move |t| {
                    let text = serde_json::to_string(&t).unwrap_or_default();
                    (0..placement.processes)
                        .filter(move |p| *p != placement.process)
                        .map(move |p| (placement.first_worker(p), text.clone()))
                })
                .exchange(|(target, _)| *target as u64)
                .inspect(move |(_, text)| {
                    if let Ok(t) = serde_json::from_str::<AlertTransition>(text) {
                        let _ = board_out.send(Output::BoardAlert(t));
                    }
                });
        }
        let alerts = alerts.inspect(move |t: &AlertTransition| {
            // The output thread stops only after the workers; a failed send means shutdown.
            let _ = alerts_out.send(Output::Alert(t.clone()));
        });
        let (probe, alerts) = alerts.probe();
        let (sensor_work, alerts) = alerts.probe();
        let citizen_for_kpis = citizen_alerts.clone();
        let (citizen_probe, _) = citizen_alerts
            .inspect(move |t: &AlertTransition| {
                let _ = citizen_out.send(Output::Alert(t.clone()));
            })
            .probe();
        let (report_states, unknown) = reports.clone().report_states_checked(report_retention_ms);
        let unknown_out = sender.clone();
        unknown
            .inspect(move |event: &UnknownReportEvent| {
                let _ = unknown_out.send(Output::UnknownReport(event.clone()));
            })
            .probe_with(&citizen_probe);

        // Only the sources some KPI reads are built: an unread one still costs its operators.
        let reads = |source: KpiSource| kpis.iter().any(|def| def.source == source);
        let report_event_rows = reads(KpiSource::ReportEvents).then(|| {
            reports
                .clone()
                .into_instants()
                .map(|((_, (kind, category, grid, _)), _time)| {
                    let kind = serde_json::to_value(kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    labeled(
                        Domain::Citizen,
                        grid.as_str().into(),
                        [("kind", kind), ("category", category), ("grid", grid)],
                        1.0,
                    )
                })
        });
        let sources = KpiSources {
            readings: reads(KpiSource::Readings).then_some(events),
            latest: reads(KpiSource::Latest).then(|| readings.latest(registry.clone())),
            // Sensor alerts only: the alert KPIs follow the sensor clock.
            alerts: reads(KpiSource::Alerts).then(|| alerts.active_alerts()),
            reports: reads(KpiSource::Reports).then(|| {
                let citizen_active = citizen_for_kpis.active_alerts();
                with_registry_labels(report_states.mark_overdue(citizen_active), registry.clone())
            }),
            report_events: report_event_rows
                .map(|rows| insertions(with_registry_labels(rows, registry))),
        };
        for (clock, defs) in [
            (KpiClock::Sensors, &sensor_kpis),
            (KpiClock::Citizen, &citizen_kpis),
        ] {
            let Some(values) = kpi_values(&sources, defs) else {
                continue;
            };
            if clock == KpiClock::Sensors {
                values.inner.clone().probe_with(&sensor_work);
            }
            let out = kpi_out.clone();
            let mut last_sent: Option<Time> = None;
            // Every update to the first worker of every process: its frontier there is the
            // whole cluster's, so one worker per process tells the store.
            values
                .inner
                .flat_map(move |update| {
                    (0..placement.processes)
                        .map(move |p| (placement.first_worker(p), update.clone()))
                })
                .exchange(|(target, _)| *target as u64)
                .sink(Pipeline, "KpiSink", move |(input, frontier)| {
                    let mut updates = Vec::new();
                    input.for_each(|_capability, data| {
                        updates.extend(data.drain(..).map(|(_, update)| update));
                    });
                    if !first_local {
                        return;
                    }
                    if !updates.is_empty() {
                        let _ = out.send(Output::KpiUpdates(clock, updates));
                    }
                    // After the updates, so the store never applies a time with updates in flight.
                    let time = frontier.frontier().first().copied().unwrap_or(Time::MAX);
                    if last_sent != Some(time) {
                        last_sent = Some(time);
                        let _ = out.send(Output::KpiFrontier(clock, 0, time));
                    }
                });
        }
        let (sensors_durable, sensors_durable_stream) = scope.new_input::<()>();
        let (citizen_durable, citizen_durable_stream) = scope.new_input::<()>();
        let (sensors_durable_probe, _) = sensors_durable_stream.probe();
        let (citizen_durable_probe, _) = citizen_durable_stream.probe();
        (
            Inputs {
                readings: readings_input,
                registry: registry_input,
                rules: rules_input,
                reports: reports_input,
                partitions: partitions_input,
                durable: [sensors_durable, citizen_durable],
            },
            [
                probe,
                citizen_probe,
                sensors_durable_probe,
                citizen_durable_probe,
                sensor_work,
            ],
        )
    })
}
