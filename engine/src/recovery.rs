//! After a restart the engine re-reads input from its committed offsets, which lie before what
//! it already wrote (commits trail the durable outputs by the rules' history). The transitions
//! it derives again must not reach the outputs twice: [`RecoveredAlerts`] holds the newest
//! logged transition of every alert in the alert log and leaves out what repeats it.
//!
//! An alert's transitions leave the engine in event-time order, so the log holds every
//! transition of an alert up to its newest logged one: a re-derived transition at or before
//! that time is a repeat. One after it that keeps the logged state (firing again while the log
//! says firing) is the re-read history restarting a state machine: also left out. An alert's
//! entry is dropped at its first new transition, so the set only shrinks.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use citybrain_model::{AlertTransition, EventTime, TransitionState};
use citybrain_operators::EntityId;
use citybrain_operators::hit::AlertKey;
use rustc_hash::FxHashSet;
use serde::Deserialize;

/// The part of a logged transition recovery needs.
#[derive(Deserialize)]
struct Logged {
    rule: String,
    entity: String,
    state: TransitionState,
    event_time: EventTime,
}

/// The newest logged transition of each alert, from the alert log of the previous run.
#[derive(Debug, Default)]
pub struct RecoveredAlerts {
    newest: HashMap<(String, String), (EventTime, TransitionState)>,
    left_out: u64,
}

impl RecoveredAlerts {
    /// Reads the alert log at `path`; a missing file is an empty log. Lines that do not parse
    /// (a line cut short by a crash) are skipped with a warning.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(error) => return Err(error),
        };
        let mut recovered = Self::default();
        let mut skipped = 0u64;
        for line in BufReader::new(file).lines() {
            let line = line?;
            match serde_json::from_str::<Logged>(&line) {
                Ok(logged) => recovered.remember(logged),
                Err(_) if line.trim().is_empty() => {}
                Err(_) => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::warn!(path = %path.display(), skipped, "alert log lines that do not parse");
        }
        Ok(recovered)
    }

    /// Adds the transitions of another log given as JSON payloads, one transition each (the
    /// shared alerts topic, as an engine taking over from another reads it); returns how many
    /// did not parse.
    pub fn merge_payloads(&mut self, payloads: &[Vec<u8>]) -> usize {
        let mut skipped = 0;
        for payload in payloads {
            match serde_json::from_slice::<Logged>(payload) {
                Ok(logged) => self.remember(logged),
                Err(_) => skipped += 1,
            }
        }
        skipped
    }

    fn remember(&mut self, logged: Logged) {
        let slot = self
            .newest
            .entry((logged.rule, logged.entity))
            .or_insert((logged.event_time, logged.state));
        if logged.event_time >= slot.0 {
            *slot = (logged.event_time, logged.state);
        }
    }

    /// How many alerts the log holds a transition of (and are not yet past it).
    pub fn pending(&self) -> usize {
        self.newest.len()
    }

    /// The alerts the log last recorded as firing: their state machines start as firing, so
    /// an alert whose start lies before the re-read history still resolves.
    pub fn firing(&self) -> FxHashSet<AlertKey> {
        self.newest
            .iter()
            .filter(|(_, (_, state))| *state == TransitionState::Firing)
            .map(|((rule, entity), _)| (Arc::from(rule.as_str()), EntityId::from(entity.as_str())))
            .collect()
    }

    /// How many transitions [`RecoveredAlerts::admit`] left out.
    pub fn left_out(&self) -> u64 {
        self.left_out
    }

    /// False when `transition` repeats what the log holds.
    pub fn admit(&mut self, transition: &AlertTransition) -> bool {
        if self.newest.is_empty() {
            return true;
        }
        let key = (transition.rule.clone(), transition.entity.clone());
        let Some(&(time, state)) = self.newest.get(&key) else {
            return true;
        };
        if transition.event_time <= time || transition.state == state {
            self.left_out += 1;
            return false;
        }
        self.newest.remove(&key);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use citybrain_model::TransitionState::{Firing, Resolved};

    use super::*;

    fn transition(entity: &str, state: TransitionState, time: EventTime) -> AlertTransition {
        AlertTransition {
            id: citybrain_model::alert::transition_id("ch4-high", entity, state, time),
            rule: "ch4-high".into(),
            entity: entity.into(),
            domain: citybrain_model::Domain::Mine,
            state,
            severity: citybrain_model::Severity::Critical,
            summary: String::new(),
            value: 1.2,
            event_time: time,
            event_time_rfc3339: String::new(),
            labels: Default::default(),
            reason: None,
        }
    }

    #[test]
    fn repeats_and_restarted_state_machines_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let mut file = std::fs::File::create(&path).unwrap();
        for t in [
            transition("s1", Firing, 1_000),
            transition("s1", Resolved, 5_000),
            transition("s2", Firing, 3_000),
        ] {
            writeln!(file, "{}", serde_json::to_string(&t).unwrap()).unwrap();
        }
        writeln!(file, "{{\"rule\":\"cut sho").unwrap();
        drop(file);

        let mut recovered = RecoveredAlerts::load(&path).unwrap();
        assert_eq!(recovered.pending(), 2);
        let firing: Vec<_> = recovered.firing().into_iter().collect();
        assert_eq!(firing, vec![("ch4-high".into(), "s2".into())]);
        let replayed = [
            (transition("s1", Firing, 1_000), false),   // repeat
            (transition("s1", Resolved, 5_000), false), // repeat
            (transition("s2", Firing, 4_000), false),   // history restarted: still firing
            (transition("s3", Firing, 2_000), true),    // never logged: lost before the crash
            (transition("s1", Firing, 9_000), true),    // new
            (transition("s1", Resolved, 9_500), true),  // after the first new one: all new
            (transition("s2", Resolved, 6_000), true),  // new
        ];
        let admitted: Vec<bool> = replayed.iter().map(|(t, _)| recovered.admit(t)).collect();
        let expected: Vec<bool> = replayed.iter().map(|(_, e)| *e).collect();
        assert_eq!(admitted, expected);
        assert_eq!(recovered.left_out(), 3);
        assert_eq!(recovered.pending(), 0);
    }

    #[test]
    fn a_missing_log_admits_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut recovered = RecoveredAlerts::load(&dir.path().join("none.jsonl")).unwrap();
        assert!(recovered.admit(&transition("s1", Firing, 1)));
    }
}
