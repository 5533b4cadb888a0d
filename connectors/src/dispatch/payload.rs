//! Request bodies: citybrain's own JSON and an Alertmanager-compatible one.
//!
//! # `citybrain` (the default)
//!
//! ```json
//! {
//!   "version": 1,
//!   "id": "5b0f2b4f0d1c2a7e9e3b51c2c0f4a8d1",
//!   "receiver": "mine-rescue",
//!   "status": "firing",
//!   "transitions": [
//!     { "id": "5b0f2b4f0d1c2a7e9e3b51c2c0f4a8d1", "rule": "ch4-alarm",
//!       "entity": "jungar-1/face-2/ch4-upper", "domain": "mine", "state": "firing",
//!       "severity": "critical", "summary": "Methane at alarm level on jungar-1/face-2",
//!       "value": 1.03, "event_time": 1795910401000,
//!       "event_time_rfc3339": "2026-11-29T00:00:01.000Z",
//!       "labels": { "face": "jungar-1/face-2", "mine": "jungar-1", "rule": "ch4-alarm" },
//!       "starts_at": 1795910401000 }
//!   ]
//! }
//! ```
//!
//! `id` equals the `webhook-id` header: the transition id for a single transition, an id
//! derived from the member ids for a grouped request, and for a reminder of a still-firing
//! alert an id derived from the transition id and the reminder number. `status` is `firing`
//! when any member is firing. Each member is an alert transition (the same object as on the
//! alerts topic, see `config/examples/alert-transition.json`) plus `starts_at` (when the
//! alert started firing, epoch ms, when known) and, for reminders, `repeat` (1, 2, ...).
//! Members of one request are distinct alerts.
//!
//! # `alertmanager`
//!
//! The Alertmanager webhook payload, version 4, so receivers written for Alertmanager work
//! unchanged: each member becomes an alert whose labels are the transition's labels plus
//! `alertname` (the rule), `rule`, `entity`, `domain` and `severity`; annotations hold
//! `summary`, `value`, `event_time` and `transition_id`; `endsAt` is set on resolved alerts;
//! `fingerprint` is derived from rule and entity.

use std::collections::BTreeMap;

use citybrain_model::time::format_event_time;
use citybrain_model::{AlertTransition, TransitionState};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::routing::alert_labels;

/// Which JSON a webhook receiver gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PayloadFormat {
    /// citybrain's documented payload.
    #[default]
    Citybrain,
    /// Alertmanager's webhook payload, version 4.
    Alertmanager,
}

impl PayloadFormat {
    /// The name used in config.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::Citybrain => "citybrain",
            PayloadFormat::Alertmanager => "alertmanager",
        }
    }
}

/// One transition of a request.
#[derive(Clone, Copy, Debug)]
pub struct Member<'a> {
    /// The transition.
    pub transition: &'a AlertTransition,
    /// When the alert started firing, epoch ms.
    pub starts_at: Option<u64>,
    /// For reminders: the reminder number.
    pub repeat: Option<u32>,
}

/// The request body for `members` under the message `id`.
pub fn body(
    format: PayloadFormat,
    id: &str,
    receiver: &str,
    members: &[Member<'_>],
    external_url: &str,
) -> Vec<u8> {
    let value = match format {
        PayloadFormat::Citybrain => citybrain(id, receiver, members),
        PayloadFormat::Alertmanager => alertmanager(receiver, members, external_url),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

fn status(members: &[Member<'_>]) -> &'static str {
    if members
        .iter()
        .any(|m| m.transition.state == TransitionState::Firing)
    {
        "firing"
    } else {
        "resolved"
    }
}

/// One member as citybrain JSON: the transition plus `starts_at` and `repeat` when known.
pub(crate) fn member_value(m: &Member<'_>) -> Value {
    let mut value = serde_json::to_value(m.transition).unwrap_or(Value::Null);
    if let Value::Object(object) = &mut value {
        if let Some(starts_at) = m.starts_at {
            object.insert("starts_at".into(), json!(starts_at));
        }
        if let Some(repeat) = m.repeat {
            object.insert("repeat".into(), json!(repeat));
        }
    }
    value
}

fn citybrain(id: &str, receiver: &str, members: &[Member<'_>]) -> Value {
    let transitions: Vec<Value> = members.iter().map(member_value).collect();
    json!({
        "version": 1,
        "id": id,
        "receiver": receiver,
        "status": status(members),
        "transitions": transitions,
    })
}

/// A stable fingerprint of an alert (rule, entity), 16 hex digits.
pub fn fingerprint(rule: &str, entity: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(rule.as_bytes());
    hasher.update([0u8]);
    hasher.update(entity.as_bytes());
    hex::encode(&hasher.finalize()[..8])
}

/// Alertmanager's "zero" time, used for `endsAt` of firing alerts.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn common(maps: &[Map<String, Value>]) -> Map<String, Value> {
    let Some((first, rest)) = maps.split_first() else {
        return Map::new();
    };
    first
        .iter()
        .filter(|(k, v)| rest.iter().all(|m| m.get(*k) == Some(v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn alertmanager(receiver: &str, members: &[Member<'_>], external_url: &str) -> Value {
    let mut all_labels = Vec::new();
    let mut all_annotations = Vec::new();
    let mut alerts = Vec::new();
    for m in members {
        let t = m.transition;
        let mut labels: BTreeMap<String, String> = alert_labels(t);
        labels.remove("state");
        labels.insert("alertname".into(), t.rule.clone());
        let labels: Map<String, Value> = labels
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let mut annotations = Map::new();
        annotations.insert("summary".into(), json!(t.summary));
        annotations.insert("value".into(), json!(t.value.to_string()));
        annotations.insert("event_time".into(), json!(t.event_time_rfc3339));
        annotations.insert("transition_id".into(), json!(t.id));
        if let Some(reason) = &t.reason {
            annotations.insert("reason".into(), json!(reason));
        }
        let starts_at = format_event_time(m.starts_at.unwrap_or(t.event_time));
        let ends_at = match t.state {
            TransitionState::Firing => ZERO_TIME.to_string(),
            TransitionState::Resolved => t.event_time_rfc3339.clone(),
        };
        alerts.push(json!({
            "status": t.state.as_str(),
            "labels": labels,
            "annotations": annotations,
            "startsAt": starts_at,
            "endsAt": ends_at,
            "generatorURL": external_url,
            "fingerprint": fingerprint(&t.rule, &t.entity),
        }));
        all_labels.push(labels);
        all_annotations.push(annotations);
    }
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{receiver=\"{receiver}\"}}"),
        "truncatedAlerts": 0,
        "status": status(members),
        "receiver": receiver,
        "groupLabels": {},
        "commonLabels": common(&all_labels),
        "commonAnnotations": common(&all_annotations),
        "externalURL": external_url,
        "alerts": alerts,
    })
}

/// An id derived from several ids (order does not matter): the `webhook-id` of a grouped
/// request or of a reminder.
pub fn derived_id(kind: &str, ids: &[&str]) -> String {
    let mut sorted: Vec<&str> = ids.to_vec();
    sorted.sort_unstable();
    let mut hasher = Sha256::new();
    hasher.update(kind.as_bytes());
    for id in sorted {
        hasher.update([0u8]);
        hasher.update(id.as_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use citybrain_model::alert::transition_id;
    use citybrain_model::{Domain, Severity};

    use super::*;

    fn transition(entity: &str, state: TransitionState, time: u64) -> AlertTransition {
        AlertTransition {
            id: transition_id("ch4-alarm", entity, state, time),
            rule: "ch4-alarm".into(),
            entity: entity.into(),
            domain: Domain::Mine,
            state,
            severity: Severity::Critical,
            summary: "Methane at alarm level".into(),
            value: 1.03,
            event_time: time,
            event_time_rfc3339: format_event_time(time),
            labels: BTreeMap::from([
                ("mine".to_string(), "jungar-1".to_string()),
                ("rule".to_string(), "ch4-alarm".to_string()),
                ("face".to_string(), format!("jungar-1/{entity}")),
            ]),
            reason: None,
        }
    }

    #[test]
    fn citybrain_payload() {
        let t = transition("s1", TransitionState::Firing, 1_795_910_401_000);
        let member = Member {
            transition: &t,
            starts_at: Some(t.event_time),
            repeat: Some(2),
        };
        let value: Value = serde_json::from_slice(&body(
            PayloadFormat::Citybrain,
            "the-id",
            "rescue",
            &[member],
            "",
        ))
        .unwrap();
        let mut expected_member = serde_json::to_value(&t).unwrap();
        expected_member["starts_at"] = json!(1_795_910_401_000u64);
        expected_member["repeat"] = json!(2);
        assert_eq!(
            value,
            json!({
                "version": 1,
                "id": "the-id",
                "receiver": "rescue",
                "status": "firing",
                "transitions": [expected_member],
            })
        );
    }

    #[test]
    fn alertmanager_payload() {
        let firing = transition("s1", TransitionState::Firing, 1_795_910_401_000);
        let resolved = transition("s2", TransitionState::Resolved, 1_795_910_402_000);
        let members = [
            Member {
                transition: &firing,
                starts_at: Some(firing.event_time),
                repeat: None,
            },
            Member {
                transition: &resolved,
                starts_at: Some(1_795_910_400_000),
                repeat: None,
            },
        ];
        let value: Value = serde_json::from_slice(&body(
            PayloadFormat::Alertmanager,
            "ignored",
            "county",
            &members,
            "http://citybrain.local",
        ))
        .unwrap();
        assert_eq!(value["version"], "4");
        assert_eq!(value["status"], "firing");
        assert_eq!(value["receiver"], "county");
        assert_eq!(value["groupKey"], "{}:{receiver=\"county\"}");
        assert_eq!(value["externalURL"], "http://citybrain.local");
        assert_eq!(
            value["commonLabels"],
            json!({"alertname": "ch4-alarm", "domain": "mine", "mine": "jungar-1",
                   "rule": "ch4-alarm", "severity": "critical"})
        );
        assert_eq!(
            value["commonAnnotations"],
            json!({"summary": "Methane at alarm level", "value": "1.03"})
        );
        assert_eq!(
            value["alerts"][0],
            json!({
                "status": "firing",
                "labels": {"alertname": "ch4-alarm", "domain": "mine", "entity": "s1",
                           "face": "jungar-1/s1", "mine": "jungar-1", "rule": "ch4-alarm",
                           "severity": "critical"},
                "annotations": {"summary": "Methane at alarm level", "value": "1.03",
                                "event_time": "2026-11-29T00:00:01.000Z",
                                "transition_id": firing.id},
                "startsAt": "2026-11-29T00:00:01.000Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://citybrain.local",
                "fingerprint": fingerprint("ch4-alarm", "s1"),
            })
        );
        assert_eq!(value["alerts"][1]["status"], "resolved");
        assert_eq!(value["alerts"][1]["startsAt"], "2026-11-29T00:00:00.000Z");
        assert_eq!(value["alerts"][1]["endsAt"], "2026-11-29T00:00:02.000Z");
    }

    #[test]
    fn derived_ids_ignore_order_and_differ_by_kind() {
        let a = derived_id("group", &["x", "y"]);
        assert_eq!(a, derived_id("group", &["y", "x"]));
        assert_eq!(a.len(), 32);
        assert_ne!(a, derived_id("repeat", &["x", "y"]));
        assert_ne!(a, derived_id("group", &["xy"]));
        assert_ne!(fingerprint("a", "bc"), fingerprint("ab", "c"));
    }
}
