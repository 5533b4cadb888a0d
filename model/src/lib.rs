//! citybrain's data model: the events that arrive on Kafka, the reference data that gives
//! them meaning, the alert transitions the engine emits, and the dead-letter reasons for input
//! that cannot be used.
//!
//! This crate has no heavy dependencies so every other crate (operators, connectors, engine,
//! tools) can share one definition of the wire formats.

pub mod alert;
pub mod decode;
#[doc(hidden)]
pub mod fuzzing;
pub mod partition;
pub mod reading;
pub mod registry;
pub mod report;
pub mod time;

pub use alert::{AlertTransition, Severity, TransitionState};
pub use decode::{DeadLetterReason, DecodeError};
pub use partition::PartitionId;
pub use reading::{Domain, Metric, Reading};
pub use registry::{EntityInfo, Labels, RegistryKind, RegistryUpdate};
pub use report::{ReportEvent, ReportKind};
pub use time::{EventTime, parse_event_time};

/// A sensor, device, grid or report id: held inline up to 24 bytes (the ids seen are well
/// under), so decoding a reading allocates nothing for it, and the copies a reading's key,
/// matches, hits and alert keys each take cost no allocation; comparing two reads no other
/// memory.
pub type EntityId = compact_str::CompactString;
