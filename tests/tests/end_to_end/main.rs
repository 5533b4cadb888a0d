//! citybrain's end-to-end tests, one module per area, linked into one test binary: each binary
//! links librdkafka, timely and axum, so one binary instead of one per file keeps the build
//! small enough for CI machines with little disk.

mod citizen_reports;
mod cluster_mode;
mod consumer_group_lease;
mod hostile_input;
mod http_api;
mod ingest_stall;
mod kafka_end_to_end;
mod kafka_faults;
mod kpi_la311;
mod real_data_methane;
mod recovery;
mod replay_real_data;
mod rule_kinds_real_data;
mod rule_reload;
mod rule_scenarios;
mod sse_stream;
mod unwritable_outputs;
mod wall_browser;
mod webhook_banner;
mod webhook_delivery;
mod webhook_demo_receiver;
mod webhook_kafka_receiver;
mod webhook_ordering;
mod webhook_restart;
mod webhook_scenarios;
mod webhook_support;
