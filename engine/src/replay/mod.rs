//! `citybrain replay`: the real operators over recorded data, far faster than real time, and
//! `--compare`: current and proposed rules side by side over the same data.
//!
//! [`input`] reads recorded files into events, [`run`] merges them into one schedule and drives
//! the engine's dataflow over it, [`compare`] tells what a rule change would change.

pub mod compare;
pub mod input;
pub mod run;

pub use compare::{RuleChange, compare};
pub use input::{InputError, LoadedInput, ReplayEvent, Topics, load_input};
pub use run::{ReplayError, ReplayRun, ReplaySettings, Schedule, run};

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::config::LoadedConfig;

/// The settings of a replay of `loaded`'s config: its KPIs and allowed lateness, `workers`
/// timely workers (default: the config's).
pub fn settings(
    loaded: &LoadedConfig,
    workers: Option<usize>,
) -> Result<ReplaySettings, ReplayError> {
    let sources = &loaded.config.sources;
    Ok(ReplaySettings {
        workers: workers.unwrap_or(loaded.config.engine.workers).max(1),
        kpis: crate::runtime::load_kpis(loaded).map_err(|e| ReplayError::new(e.to_string()))?,
        lateness: [
            sources.mine.allowed_lateness,
            sources.farm.allowed_lateness,
            sources.citizen.allowed_lateness,
        ],
        recovery: loaded.config.recovery.clone(),
    })
}

/// Loads every input (see [`load_input`]) and merges them into one schedule.
pub fn schedule(
    loaded: &LoadedConfig,
    inputs: &[String],
    lateness: [std::time::Duration; 3],
) -> Result<Arc<Schedule>, InputError> {
    let topics = Topics::of(&loaded.config);
    let loaded_inputs = inputs
        .iter()
        .map(|spec| load_input(spec, &topics))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Schedule::build(loaded_inputs, lateness)))
}

/// Writes a run's outputs into `dir`: `alerts.jsonl` (the transitions, one JSON object a line,
/// as the live engine's alert file) and `kpis.json` (the final KPIs).
pub fn write_run(dir: &Path, run: &ReplayRun) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut alerts = std::io::BufWriter::new(std::fs::File::create(dir.join("alerts.jsonl"))?);
    for t in &run.transitions {
        serde_json::to_writer(&mut alerts, t)?;
        alerts.write_all(b"\n")?;
    }
    alerts.flush()?;
    let kpis = serde_json::to_vec_pretty(&run.kpis)?;
    std::fs::write(dir.join("kpis.json"), kpis)
}

/// Writes the schedule's dead letters, and the first run's unknown-report events, to
/// `dir/dead-letters.jsonl`.
pub fn write_dead_letters(dir: &Path, schedule: &Schedule, run: &ReplayRun) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("dead-letters.jsonl"))?);
    for letter in schedule.dead_letters.iter().chain(&run.unknown_reports) {
        serde_json::to_writer(&mut out, letter)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
