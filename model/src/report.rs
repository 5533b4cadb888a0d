//! Citizen report lifecycle events.

use serde::{Deserialize, Serialize};

use crate::time::EventTime;

/// What happened to a citizen report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// A citizen filed the report.
    Created,
    /// The report was assigned to a unit.
    Dispatched,
    /// The unit closed the report.
    Resolved,
    /// The report moved one level up (village -> town -> district).
    Escalated,
    /// A closed report was opened again.
    Reopened,
    /// The return visit after resolution took place.
    FollowedUp,
}

/// One citizen report event as decoded from the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportEvent {
    /// Report id, e.g. `R-20261129-000123`.
    pub report: String,
    /// When it happened (epoch milliseconds).
    pub time: EventTime,
    /// What happened.
    pub kind: ReportKind,
    /// Category, e.g. `road_damage`, `wage_dispute`.
    pub category: String,
    /// Village/community grid id (see the grid registry).
    pub grid: String,
    /// Unit the report is dispatched to, if any.
    pub unit: Option<String>,
}
