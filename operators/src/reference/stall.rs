//! Ingest stalls, from scratch, for rules present from the start: per (absence rule with a
//! `stall_after`, partition of its domain), the sorted times the partition was heard from (a
//! reading of any entity placed on it); after each, stalled at `time + stall_after` unless the
//! next comes at or before then, resolved at the next one. Stalls starting at or after `end`
//! never start. Each stall also marks the interval during which the entities placed on the
//! partition are stalled for the rule, which the absence reference then honours.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use citybrain_model::{PartitionId, Reading};

use super::Evaluation;
use crate::kinds::absence::AbsenceRule;
use crate::stall::{STALL_RULE_KIND, stall_alarm};
use crate::{EntityKey, Time};

/// (rule id, entity) -> time -> `true` where a stall of its partition starts, `false` where
/// it ends.
pub(super) type StallEdges = BTreeMap<(String, String), BTreeMap<Time, bool>>;

/// The stall evaluations of `rules` over `readings` (any order), with each entity's partition
/// from `placements`, the input ending at `end`; and the stall edges of the placed entities.
pub(super) fn evaluations(
    readings: &[Reading],
    rules: &[AbsenceRule],
    placements: &HashMap<EntityKey, PartitionId>,
    end: Time,
) -> (Vec<Evaluation>, StallEdges) {
    let mut heard: BTreeMap<&PartitionId, BTreeSet<Time>> = BTreeMap::new();
    for reading in readings {
        if let Some(partition) = placements.get(&(reading.domain, reading.entity.clone())) {
            heard.entry(partition).or_default().insert(reading.time);
        }
    }
    let mut out = Vec::new();
    let mut edges = StallEdges::new();
    for rule in rules {
        let Some(after) = rule.stall_after_ms else {
            continue;
        };
        let alarm = stall_alarm(rule);
        for (partition, times) in &heard {
            if partition.domain != rule.alarm.domain {
                continue;
            }
            let mut labels = vec![
                ("partition".to_string(), partition.partition.to_string()),
                ("rule_kind".to_string(), STALL_RULE_KIND.to_string()),
                ("topic".to_string(), partition.topic.clone()),
            ];
            labels.sort();
            let evaluation = |time: Time, stalled: bool, since: Time| Evaluation {
                rule: rule.alarm.id.clone(),
                entity: partition.entity(),
                time,
                value: if stalled { 1.0 } else { 0.0 },
                reported: (time - since) as f64 / 1000.0,
                labels: labels.clone(),
                alarm: alarm.clone(),
            };
            let mut stalls = Vec::new();
            let times: Vec<Time> = times.iter().copied().collect();
            for (i, heard_at) in times.iter().enumerate() {
                let start = heard_at + after;
                let next = times.get(i + 1).copied();
                if start >= end || next.is_some_and(|n| n <= start) {
                    continue;
                }
                out.push(evaluation(start, true, *heard_at));
                if let Some(n) = next {
                    out.push(evaluation(n, false, *heard_at));
                }
                stalls.push((start, next));
            }
            for ((domain, entity), placed) in placements {
                if placed != *partition || *domain != rule.alarm.domain {
                    continue;
                }
                let entry = edges
                    .entry((rule.alarm.id.clone(), entity.to_string()))
                    .or_default();
                for (start, stop) in &stalls {
                    entry.insert(*start, true);
                    if let Some(stop) = stop {
                        entry.insert(*stop, false);
                    }
                }
            }
        }
    }
    (out, edges)
}
