//! The alert board: active alerts and recent transitions, plus the live event feed the HTTP
//! stream (`/api/stream`) and the wall page subscribe to.
//!
//! The output thread applies every transition here after writing it to the outputs, so what
//! the API shows is never ahead of what was delivered.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{PoisonError, RwLock};

use citybrain_connectors::dispatch::{DisabledReceiver, Dispatcher};
use citybrain_model::{AlertTransition, TransitionState};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::health::Problem;
use crate::kpi::KpiSnapshot;
use crate::reload::ReloadStatus;

/// How many recent transitions the board keeps.
pub const RECENT_TRANSITIONS: usize = 200;

/// Engine status as shown on the wall.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LiveStatus {
    /// Sensor-clock watermark (epoch ms): every alert up to here is final.
    pub sensor_watermark: u64,
    /// Citizen-clock watermark (epoch ms).
    pub citizen_watermark: u64,
    /// Input messages read since start.
    pub events: u64,
    /// Dead letters since start.
    pub dead_letters: u64,
    /// Transitions since start.
    pub transitions: u64,
    /// Event time to output latency of transitions, ms: p50, p99 (None before the first).
    pub latency_p50_ms: Option<u64>,
    /// See `latency_p50_ms`.
    pub latency_p99_ms: Option<u64>,
    /// Wall clock when this status was taken (epoch ms).
    pub wall_time: u64,
    /// Since when and why the Kafka brokers do not answer (the engine waits for them).
    pub kafka_away: Option<Problem>,
    /// Since when and why the outputs cannot be written (the engine does not consume).
    pub outputs_blocked: Option<Problem>,
    /// Alert dispatch receivers disabled by a 410 Gone, in config order (empty without
    /// dispatch). Each stays disabled, its transitions going to its dead letter, until its
    /// config changes; the wall shows a red banner while any is.
    pub receivers_disabled: Vec<DisabledReceiver>,
    /// Alert dispatch: (transition, receiver) pairs not yet acknowledged; `None` without
    /// dispatch.
    pub dispatch_queue: Option<usize>,
}

impl LiveStatus {
    /// This status with the dispatcher's current state filled in.
    pub fn with_dispatch(mut self, dispatcher: Option<&Dispatcher>) -> Self {
        if let Some(dispatcher) = dispatcher {
            self.receivers_disabled = dispatcher.disabled_receivers();
            self.dispatch_queue = Some(dispatcher.status().queue_depth());
        }
        self
    }
}

/// One message of the live feed.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeedEvent {
    /// An alert transition.
    Alert {
        /// The transition.
        transition: AlertTransition,
    },
    /// A KPI snapshot, complete at one logical time.
    Kpis {
        /// The snapshot.
        snapshot: KpiSnapshot,
    },
    /// Engine status (about once a second).
    Status {
        /// The status.
        status: LiveStatus,
    },
    /// The outcome of a rule reload attempt (the wall shows a banner while it failed).
    Config {
        /// The reload status.
        status: ReloadStatus,
    },
}

/// The alerts served by `/api/alerts`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AlertsView {
    /// Sensor-clock watermark when taken (epoch ms).
    pub watermark: u64,
    /// Alerts firing now, by rule then entity.
    pub active: Vec<AlertTransition>,
    /// The most recent transitions, newest event time first.
    pub recent: Vec<AlertTransition>,
}

#[derive(Default)]
struct BoardState {
    active: BTreeMap<(String, String), AlertTransition>,
    recent: VecDeque<AlertTransition>,
    status: LiveStatus,
    kpis: KpiSnapshot,
    config: Option<ReloadStatus>,
}

/// Active alerts, recent transitions, status, and the feed.
pub struct AlertBoard {
    state: RwLock<BoardState>,
    feed: broadcast::Sender<FeedEvent>,
}

impl Default for AlertBoard {
    fn default() -> Self {
        AlertBoard::new()
    }
}

impl AlertBoard {
    /// An empty board.
    pub fn new() -> Self {
        let (feed, _) = broadcast::channel(4096);
        AlertBoard {
            state: RwLock::new(BoardState::default()),
            feed,
        }
    }

    /// Applies a transition and publishes it.
    pub fn apply(&self, transition: &AlertTransition) {
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            let key = (transition.rule.clone(), transition.entity.clone());
            match transition.state {
                TransitionState::Firing => {
                    state.active.insert(key, transition.clone());
                }
                TransitionState::Resolved => {
                    state.active.remove(&key);
                }
            }
            state.recent.push_front(transition.clone());
            state.recent.truncate(RECENT_TRANSITIONS);
        }
        let _ = self.feed.send(FeedEvent::Alert {
            transition: transition.clone(),
        });
    }

    /// Records and publishes the engine status.
    pub fn set_status(&self, status: LiveStatus) {
        self.state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .status = status.clone();
        let _ = self.feed.send(FeedEvent::Status { status });
    }

    /// Records and publishes a KPI snapshot.
    pub fn set_kpis(&self, snapshot: KpiSnapshot) {
        self.state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .kpis = snapshot.clone();
        let _ = self.feed.send(FeedEvent::Kpis { snapshot });
    }

    /// Records and publishes the outcome of a rule reload attempt.
    pub fn set_config(&self, status: ReloadStatus) {
        self.state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .config = Some(status.clone());
        let _ = self.feed.send(FeedEvent::Config { status });
    }

    /// The latest rule reload status, once the engine has started.
    pub fn config(&self) -> Option<ReloadStatus> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .config
            .clone()
    }

    /// The latest KPI snapshot.
    pub fn kpis(&self) -> KpiSnapshot {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .kpis
            .clone()
    }

    /// The latest status.
    pub fn status(&self) -> LiveStatus {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .status
            .clone()
    }

    /// Active alerts and recent transitions.
    pub fn alerts(&self) -> AlertsView {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        // Workers emit different keys in parallel: order by event time, not by arrival.
        let mut recent: Vec<AlertTransition> = state.recent.iter().cloned().collect();
        recent.sort_by(|a, b| {
            (b.event_time, &a.rule, &a.entity).cmp(&(a.event_time, &b.rule, &b.entity))
        });
        AlertsView {
            watermark: state.status.sensor_watermark,
            active: state.active.values().cloned().collect(),
            recent,
        }
    }

    /// Number of alerts firing now.
    pub fn firing(&self) -> usize {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .active
            .len()
    }

    /// A receiver of every feed event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<FeedEvent> {
        self.feed.subscribe()
    }
}
