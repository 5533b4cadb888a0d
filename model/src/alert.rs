//! Alert transitions: what the engine emits when an alert of a (rule, entity) starts or stops
//! firing. Ids are deterministic, so a replay after a crash repeats the same id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::reading::Domain;
use crate::time::EventTime;

/// How urgent an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For the record.
    Info,
    /// Needs attention.
    Warning,
    /// Needs action now.
    Critical,
}

impl Severity {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// The state an alert enters with a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionState {
    /// The condition held for the rule's `for` duration.
    Firing,
    /// The clear condition was met.
    Resolved,
}

impl TransitionState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionState::Firing => "firing",
            TransitionState::Resolved => "resolved",
        }
    }
}

/// One alert transition, as written to the alert log, the alerts topic and webhooks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertTransition {
    /// Deterministic id: the same input always yields the same id.
    pub id: String,
    /// Rule id.
    pub rule: String,
    /// The entity the alert is about (sensor, device, report id).
    pub entity: String,
    /// The rule's domain.
    pub domain: Domain,
    /// Firing or resolved.
    pub state: TransitionState,
    /// The rule's severity.
    pub severity: Severity,
    /// The rule's human-readable summary.
    pub summary: String,
    /// The value that caused the transition.
    pub value: f64,
    /// Event time of the reading that caused the transition (epoch milliseconds).
    pub event_time: EventTime,
    /// The same time as RFC 3339, for people.
    pub event_time_rfc3339: String,
    /// Entity labels (mine, face, ...), the rule's labels, plus `rule`, `severity`, `metric`.
    pub labels: BTreeMap<String, String>,
    /// Why the alert changed when it was not the rule's own condition, e.g.
    /// [`RULE_REMOVED`] for a firing alert resolved because a reload removed its rule.
    /// Absent (and not serialized) for transitions the rule's condition caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The [`AlertTransition::reason`] of an alert resolved because its rule was removed by a
/// rule reload.
pub const RULE_REMOVED: &str = "rule removed";

/// The [`AlertTransition::reason`] of an alert resolved because a rule reload changed its rule
/// to watch another kind, domain or metric.
pub const RULE_CHANGED: &str = "rule changed";

/// The [`AlertTransition::reason`] of an alert resolved because a rule reload changed its rule's
/// scope so that it no longer selects the alert's entity.
pub const OUT_OF_SCOPE: &str = "out of scope";

/// The deterministic transition id: a hash of rule, entity, state and event time.
pub fn transition_id(
    rule: &str,
    entity: &str,
    state: TransitionState,
    event_time: EventTime,
) -> String {
    let mut hasher = Sha256::new();
    for part in [rule, entity, state.as_str(), &event_time.to_string()] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    hex::encode(&hasher.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = transition_id("r", "e", TransitionState::Firing, 5);
        assert_eq!(a, transition_id("r", "e", TransitionState::Firing, 5));
        assert_eq!(a.len(), 32);
        assert_ne!(a, transition_id("r", "e", TransitionState::Resolved, 5));
        assert_ne!(a, transition_id("r", "e", TransitionState::Firing, 6));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(
            transition_id("ab", "c", TransitionState::Firing, 1),
            transition_id("a", "bc", TransitionState::Firing, 1)
        );
    }
}
