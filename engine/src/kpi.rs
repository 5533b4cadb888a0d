//! The KPI store: KPI values kept consistent at one completed logical time.
//!
//! KPI dataflows emit differential updates `((kpi, group), value, time, diff)`. The store holds
//! them back until the dataflow's frontier has passed their time, then applies every update of
//! that time at once, so a snapshot never shows one tile ahead of another.

use std::collections::BTreeMap;

use serde::Serialize;

/// Every KPI value at one logical time per clock.
///
/// Sensor KPIs (mines, farms, alerts) are complete at `time`; citizen-report KPIs at
/// `citizen_time` (reports allow minutes of lateness, and must not hold the mine tiles back).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KpiSnapshot {
    /// The logical time (event time, epoch ms) the sensor KPIs are complete at: every input
    /// before it is reflected, none after.
    pub time: u64,
    /// The logical time the citizen-report KPIs are complete at.
    pub citizen_time: u64,
    /// KPI name -> group (e.g. a district; `""` for ungrouped KPIs) -> value.
    pub values: BTreeMap<String, BTreeMap<String, f64>>,
}

/// One KPI change from the dataflow.
#[derive(Clone, Debug, PartialEq)]
pub struct KpiUpdate {
    /// KPI name.
    pub kpi: String,
    /// Group key (`""` when ungrouped).
    pub group: String,
    /// The value inserted or retracted.
    pub value: f64,
    /// Logical time of the change.
    pub time: u64,
    /// +1 inserts the value, -1 retracts it.
    pub diff: i64,
}

/// Applies KPI updates in logical-time order once their time is complete.
#[derive(Debug, Default)]
pub struct KpiStore {
    pending: BTreeMap<u64, Vec<KpiUpdate>>,
    snapshot: KpiSnapshot,
}

impl KpiStore {
    /// Queues an update until its time completes.
    pub fn push(&mut self, update: KpiUpdate) {
        self.pending.entry(update.time).or_default().push(update);
    }

    /// Applies every update before `frontier`; returns true when the snapshot changed.
    pub fn advance(&mut self, frontier: u64) -> bool {
        let mut changed = false;
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() >= frontier {
                break;
            }
            let mut updates = entry.remove();
            // Retractions first, so a value replaced at one time ends up inserted.
            updates.sort_by_key(|u| u.diff);
            for u in updates {
                let groups = self.snapshot.values.entry(u.kpi.clone()).or_default();
                if u.diff > 0 {
                    groups.insert(u.group, u.value);
                } else if groups.get(&u.group) == Some(&u.value) {
                    groups.remove(&u.group);
                }
                changed = true;
            }
        }
        if frontier > self.snapshot.time {
            self.snapshot.time = frontier;
        }
        changed
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> &KpiSnapshot {
        &self.snapshot
    }
}

/// The two event-time clocks KPIs follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KpiClock {
    /// Mine and farm readings, and the alerts they raise.
    Sensors = 0,
    /// Citizen reports.
    Citizen = 1,
}

/// The KPI stores of both clocks, fed by every worker's KPI sink.
#[derive(Debug)]
pub struct KpiStores {
    stores: [KpiStore; 2],
    /// Per clock, the frontier each worker reported.
    frontiers: [Vec<u64>; 2],
    /// Every defined KPI, so the snapshot lists KPIs that have no value yet.
    names: Vec<(String, KpiClock)>,
}

impl KpiStores {
    /// Stores for `workers` workers and the given KPIs.
    pub fn new(workers: usize, names: Vec<(String, KpiClock)>) -> Self {
        KpiStores {
            stores: [KpiStore::default(), KpiStore::default()],
            frontiers: [vec![0; workers.max(1)], vec![0; workers.max(1)]],
            names,
        }
    }

    /// Queues updates of one clock.
    pub fn push(&mut self, clock: KpiClock, updates: Vec<((String, String), f64, u64, i64)>) {
        for ((kpi, group), value, time, diff) in updates {
            self.stores[clock as usize].push(KpiUpdate {
                kpi,
                group,
                value,
                time,
                diff,
            });
        }
    }

    /// Records a worker's frontier; applies what every worker has completed. Returns true
    /// when the snapshot changed.
    pub fn frontier(&mut self, clock: KpiClock, worker: usize, time: u64) -> bool {
        let frontiers = &mut self.frontiers[clock as usize];
        if let Some(slot) = frontiers.get_mut(worker) {
            *slot = (*slot).max(time);
        }
        let complete = frontiers.iter().copied().min().unwrap_or(0);
        self.stores[clock as usize].advance(complete)
    }

    /// Both clocks' values in one snapshot.
    pub fn snapshot(&self) -> KpiSnapshot {
        let sensors = self.stores[KpiClock::Sensors as usize].snapshot();
        let citizen = self.stores[KpiClock::Citizen as usize].snapshot();
        let mut values = BTreeMap::new();
        for (name, clock) in &self.names {
            let store = &self.stores[*clock as usize];
            values.insert(
                name.clone(),
                store
                    .snapshot()
                    .values
                    .get(name)
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        KpiSnapshot {
            time: sensors.time.min(u64::MAX - 1),
            citizen_time: citizen.time.min(u64::MAX - 1),
            values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(kpi: &str, group: &str, value: f64, time: u64, diff: i64) -> KpiUpdate {
        KpiUpdate {
            kpi: kpi.into(),
            group: group.into(),
            value,
            time,
            diff,
        }
    }

    #[test]
    fn applies_only_completed_times_and_replacements_in_any_order() {
        let mut store = KpiStore::default();
        store.push(update("backlog", "dalad", 3.0, 10, 1));
        store.push(update("backlog", "dalad", 4.0, 20, 1));
        store.push(update("backlog", "dalad", 3.0, 20, -1));
        store.push(update("backlog", "uxin", 1.0, 30, 1));
        assert!(store.advance(15));
        assert_eq!(store.snapshot().values["backlog"]["dalad"], 3.0);
        assert_eq!(store.snapshot().time, 15);
        assert!(store.advance(21));
        assert_eq!(store.snapshot().values["backlog"]["dalad"], 4.0);
        assert!(!store.snapshot().values["backlog"].contains_key("uxin"));
        assert!(!store.advance(25));
        assert_eq!(store.snapshot().time, 25);
    }
}
