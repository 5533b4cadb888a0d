//! citybrain's engine: config loading and validation, dataflow assembly, the worker loop, the
//! embedded demo and the simulator driver. The `citybrain` binary is a thin CLI over this.

pub mod board;
pub mod config;
pub mod dataflow;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod http;
pub mod kpi;
pub mod latency;
pub mod metrics;
pub mod receiver;
pub mod recovery;
pub mod reload;
pub mod replay;
pub mod runtime;
