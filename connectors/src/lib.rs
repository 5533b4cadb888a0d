//! citybrain's connectors: the Kafka source, the alert and dead-letter outputs (Kafka topics
//! and JSONL files) and the built-in city simulator. No timely here: the engine drives them.

pub mod closing;
pub mod commit;
pub mod dead_letter;
pub mod dispatch;
pub mod end_offsets;
pub mod kafka;
pub mod lease;
pub mod simulate;
pub mod simulator;
pub mod sink;
pub mod topic_history;
pub mod watermark;
