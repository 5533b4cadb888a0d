//! What a rule change would change: the alerts of two runs over the same data, per rule.
//!
//! Each run's transitions become episodes per (rule, entity): firing at one time, resolved at a
//! later one (or still firing at the end). An episode of the proposed rules that overlaps one
//! of the current rules for the same entity is the same alert, *shifted* when it starts at
//! another time; the others are *added* (only the proposed rules raise them) or *removed*.

use std::collections::{BTreeMap, BTreeSet};

use citybrain_model::{AlertTransition, TransitionState};
use serde::Serialize;

/// One alert from firing to resolved.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Episode {
    /// The alert's entity.
    pub entity: String,
    /// When it fired (event time, epoch ms).
    pub start: u64,
    /// When it resolved; `None`: still firing at the end of the data.
    pub end: Option<u64>,
}

impl Episode {
    fn overlaps(&self, other: &Episode) -> bool {
        let before = |a: &Episode, b: &Episode| a.end.is_some_and(|end| end <= b.start);
        !before(self, other) && !before(other, self)
    }
}

/// How one rule's alerts differ between the current and the proposed rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuleChange {
    /// Rule id.
    pub rule: String,
    /// Alerts (firings) with the current rules.
    pub before: usize,
    /// Alerts with the proposed rules.
    pub after: usize,
    /// Alerts both raise at the same time.
    pub unchanged: usize,
    /// Alerts only the proposed rules raise.
    pub added: Vec<Episode>,
    /// Alerts only the current rules raise.
    pub removed: Vec<Episode>,
    /// The same alert at another time: (current, proposed).
    pub shifted: Vec<(Episode, Episode)>,
}

impl RuleChange {
    /// True when the rule's alerts are the same in both runs.
    pub fn is_unchanged(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.shifted.is_empty()
    }
}

/// Episodes per rule, from transitions sorted by event time.
fn episodes(transitions: &[AlertTransition]) -> BTreeMap<String, Vec<Episode>> {
    let mut open: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut out: BTreeMap<String, Vec<Episode>> = BTreeMap::new();
    for t in transitions {
        let list = out.entry(t.rule.clone()).or_default();
        match t.state {
            TransitionState::Firing => {
                open.insert((&t.rule, &t.entity), list.len());
                list.push(Episode {
                    entity: t.entity.clone(),
                    start: t.event_time,
                    end: None,
                });
            }
            TransitionState::Resolved => {
                if let Some(episode) = open
                    .remove(&(t.rule.as_str(), t.entity.as_str()))
                    .and_then(|i| list.get_mut(i))
                {
                    episode.end = Some(t.event_time);
                }
            }
        }
    }
    out
}

/// Compares the transitions of the current rules with those of the proposed rules (both sorted
/// by event time, as a replay run returns them); one entry per rule of either run.
pub fn compare(current: &[AlertTransition], proposed: &[AlertTransition]) -> Vec<RuleChange> {
    let before = episodes(current);
    let after = episodes(proposed);
    let rules: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    rules
        .into_iter()
        .map(|rule| {
            let old = before.get(rule).map_or(&[][..], Vec::as_slice);
            let new = after.get(rule).map_or(&[][..], Vec::as_slice);
            let mut change = RuleChange {
                rule: rule.clone(),
                before: old.len(),
                after: new.len(),
                ..RuleChange::default()
            };
            let mut matched = vec![false; old.len()];
            for episode in new {
                let found = old.iter().enumerate().position(|(i, o)| {
                    !matched[i] && o.entity == episode.entity && o.overlaps(episode)
                });
                match found {
                    Some(i) => {
                        matched[i] = true;
                        if old[i].start == episode.start {
                            change.unchanged += 1;
                        } else {
                            change.shifted.push((old[i].clone(), episode.clone()));
                        }
                    }
                    None => change.added.push(episode.clone()),
                }
            }
            change.removed = old
                .iter()
                .zip(&matched)
                .filter(|(_, m)| !**m)
                .map(|(o, _)| o.clone())
                .collect();
            change
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use citybrain_model::{Domain, Severity};

    use super::*;

    fn t(rule: &str, entity: &str, state: TransitionState, time: u64) -> AlertTransition {
        AlertTransition {
            id: String::new(),
            rule: rule.into(),
            entity: entity.into(),
            domain: Domain::Mine,
            state,
            severity: Severity::Warning,
            summary: String::new(),
            value: 0.0,
            event_time: time,
            event_time_rfc3339: String::new(),
            labels: BTreeMap::new(),
            reason: None,
        }
    }

    fn ep(entity: &str, start: u64, end: Option<u64>) -> Episode {
        Episode {
            entity: entity.into(),
            start,
            end,
        }
    }

    use TransitionState::{Firing, Resolved};

    #[test]
    fn overlapping_alerts_are_shifted_others_added_or_removed() {
        let current = [
            t("r", "a", Firing, 10),
            t("r", "a", Resolved, 20),
            t("r", "b", Firing, 30),
            t("r", "b", Resolved, 40),
            t("r", "c", Firing, 50),
            t("gone", "a", Firing, 60),
        ];
        let proposed = [
            t("r", "a", Firing, 10),
            t("r", "a", Resolved, 25),
            t("r", "b", Firing, 35),
            t("r", "b", Resolved, 45),
            t("r", "d", Firing, 55),
            t("r", "d", Resolved, 56),
        ];
        let changes = compare(&current, &proposed);
        assert_eq!(
            changes,
            [
                RuleChange {
                    rule: "gone".into(),
                    before: 1,
                    after: 0,
                    removed: vec![ep("a", 60, None)],
                    ..RuleChange::default()
                },
                RuleChange {
                    rule: "r".into(),
                    before: 3,
                    after: 3,
                    unchanged: 1,
                    added: vec![ep("d", 55, Some(56))],
                    removed: vec![ep("c", 50, None)],
                    shifted: vec![(ep("b", 30, Some(40)), ep("b", 35, Some(45)))],
                },
            ]
        );
        assert!(
            compare(&current, &current)
                .iter()
                .all(RuleChange::is_unchanged)
        );
    }

    #[test]
    fn back_to_back_alerts_do_not_overlap() {
        let current = [t("r", "a", Firing, 10), t("r", "a", Resolved, 20)];
        let proposed = [t("r", "a", Firing, 20), t("r", "a", Resolved, 30)];
        let changes = compare(&current, &proposed);
        assert_eq!(changes[0].added.len(), 1);
        assert_eq!(changes[0].removed.len(), 1);
    }
}
