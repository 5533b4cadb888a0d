//! The `citybrain` command line: run, validate, replay, demo, simulate, receiver, latency, schema.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use citybrain_connectors::dispatch::Secret;
use citybrain_connectors::simulate::{SimulationProducer, SimulationTopics, run_real_time};
use citybrain_connectors::simulator::{Scale, Simulator, SimulatorConfig};
use citybrain_engine::receiver::DemoReceiver;
use citybrain_engine::reload::{RuleSource, on_signal, reload_on_sighup};
use citybrain_engine::runtime::{self, EngineSettings, Status};
use citybrain_engine::{config, demo, replay};
use citybrain_model::time::{format_event_time, now_millis};
use citybrain_model::{AlertTransition, TransitionState};
use clap::{Parser, Subcommand, ValueEnum};

/// glibc's malloc spent over half of a replay's time allocating and freeing the dataflow's many
/// small records (measured with perf); mimalloc serves them from thread-local free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// citybrain: a real-time stream-processing engine for a city control room.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine with a config file until Ctrl-C.
    Run {
        /// The engine config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Worker threads in this process (overrides `[engine] workers`).
        #[arg(long)]
        workers: Option<usize>,
        /// Processes of the timely cluster (overrides `[engine] processes`).
        #[arg(long)]
        processes: Option<usize>,
        /// This process's index in the cluster (overrides `[engine] process_id`).
        #[arg(long)]
        process_id: Option<usize>,
        /// The cluster's `host:port` lines, one per process (overrides `[engine] hostfile`).
        #[arg(long)]
        hostfile: Option<PathBuf>,
    },
    /// Check config and rule files; report every error with file:line:column.
    Validate {
        /// Config or rule files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Run everything embedded: in-process Kafka, the city simulator and the engine.
    Demo {
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
        /// Timely worker threads.
        #[arg(long)]
        workers: Option<usize>,
        /// Simulator seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// World size.
        #[arg(long, value_enum, default_value_t = WorldScale::Demo)]
        scale: WorldScale,
        /// Where to serve the wall page and API.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: std::net::SocketAddr,
    },
    /// Produce simulated city traffic in real time into a Kafka cluster.
    Simulate {
        /// `bootstrap.servers` of the target cluster.
        #[arg(long)]
        brokers: String,
        /// Simulator seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// World size.
        #[arg(long, value_enum, default_value_t = WorldScale::Demo)]
        scale: WorldScale,
        /// Event-time speed-up over the wall clock.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Run the rules over recorded data, far faster than real time; write the alert
    /// transitions and final KPIs. With --compare, run proposed rules too and print what would
    /// change per rule.
    Replay {
        /// The engine config (TOML): rules, KPIs, allowed lateness, topic names.
        #[arg(long)]
        config: PathBuf,
        /// Recorded events: FILE.jsonl (messages as on the topics), MAPPING.toml (a CSV or ARFF
        /// file through a mapping, see config/replay/), or MAPPING.toml=DATA.
        #[arg(long = "input", required = true)]
        inputs: Vec<String>,
        /// Proposed rule files, run side by side with the config's rules.
        #[arg(long, num_args = 1..)]
        compare: Vec<PathBuf>,
        /// Where to write alerts.jsonl, kpis.json and dead-letters.jsonl.
        #[arg(long, default_value = "replay-out")]
        out: PathBuf,
        /// Timely worker threads (default: the config's).
        #[arg(long)]
        workers: Option<usize>,
        /// Output format of the summary.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Run a dispatch unit: a webhook receiver on BIND that checks every request's Standard
    /// Webhooks signature and prints what arrives, until Ctrl-C. Point a receiver's `url` at
    /// http://BIND/hook; GET http://BIND/ lists the last requests as JSON.
    Receiver {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:9000")]
        bind: std::net::SocketAddr,
        /// The environment variable holding the signing secret (`whsec_<base64>` or any
        /// string), the same as the receiver's `secret_env` in the engine config.
        #[arg(long)]
        secret_env: String,
        /// How many requests `GET /` lists.
        #[arg(long, default_value_t = 100)]
        keep: usize,
    },
    /// Measure event time to change visible on a running engine's `/api/stream`: for every
    /// alert transition (its `event_time`) and KPI snapshot (its completed logical `time`),
    /// arrival wall clock minus event time; prints count, p50, p90, p99 and max per kind, and
    /// the events dead-lettered as `late` meanwhile. Meaningful against `citybrain demo` (event
    /// time is the wall clock at production) on the same machine.
    Latency {
        /// The engine's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Measure for this many seconds (after the warm-up).
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Seconds of the stream not counted first (start-up, registry load).
        #[arg(long, default_value_t = 5)]
        warmup: u64,
        /// The environment variable holding a read token, when the API needs one.
        #[arg(long)]
        token_env: Option<String>,
    },
    /// Write the JSON Schemas of the config, rule and KPI files (for editors).
    Schema {
        /// Directory to write them to.
        #[arg(long, default_value = config::schema::SCHEMA_DIR)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum WorldScale {
    Small,
    Demo,
}

impl From<WorldScale> for Scale {
    fn from(s: WorldScale) -> Self {
        match s {
            WorldScale::Small => Scale::Small,
            WorldScale::Demo => Scale::Demo,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A flag set by Ctrl-C (SIGINT) or SIGTERM (systemd, Kubernetes, `docker stop`): both stop
/// cleanly, flushing the outputs and handing a lease over at once.
fn stop_on_ctrl_c() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    let flag = Arc::clone(&stop);
    on_signal(
        tokio::signal::unix::SignalKind::terminate(),
        "citybrain-sigterm",
        move || {
            tracing::info!("SIGTERM: stopping");
            flag.store(true, Ordering::SeqCst);
        },
    )
    .context("installing the SIGTERM handler")?;
    Ok(stop)
}

fn print_transition(t: &AlertTransition) {
    let mark = match t.state {
        TransitionState::Firing => "FIRING  ",
        TransitionState::Resolved => "RESOLVED",
    };
    let latency = now_millis().saturating_sub(t.event_time);
    println!(
        "{mark} {:<8} {:<28} {:<40} value={:<8} at {} ({} ms after the event)  {}",
        t.severity.as_str(),
        t.rule,
        t.entity,
        t.value,
        t.event_time_rfc3339,
        latency,
        t.summary
    );
}

fn print_status(status: &Status) {
    let latency = status
        .latency_ms
        .map(|(p50, p99, max)| format!("event->alert p50 {p50} ms, p99 {p99} ms, max {max} ms"))
        .unwrap_or_else(|| "no alerts yet".into());
    let lag = now_millis().saturating_sub(status.sensor_watermark);
    println!(
        "-- status: {} firing, {} transitions, {} dead letters, sensor watermark {} (lag {} ms), {latency}",
        status.firing,
        status.transitions,
        status.dead_letters,
        format_event_time(status.sensor_watermark),
        lag
    );
}

/// A progress bar on a terminal's stderr (none when stderr is not a terminal).
fn progress_bar(events: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(events);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{prefix:>9} [{bar:40}] {pos}/{len} events, {per_sec}, {eta} left",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar
}

/// A count per key, as "key n, key n".
fn counts<'a>(keys: impl Iterator<Item = &'a str>) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for key in keys {
        *counts.entry(key).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn replay(
    path: &std::path::Path,
    inputs: &[String],
    compare: &[PathBuf],
    out: &std::path::Path,
    workers: Option<usize>,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let loaded = config::load(path).map_err(|d| anyhow::anyhow!("invalid config:\n{d}"))?;
    let proposed = match compare.is_empty() {
        true => None,
        false => Some(
            config::load_rule_files(compare)
                .map_err(|d| anyhow::anyhow!("invalid proposed rules:\n{d}"))?,
        ),
    };
    let settings = replay::settings(&loaded, workers)?;
    let loading = std::time::Instant::now();
    let schedule = replay::schedule(&loaded, inputs, settings.lateness)?;
    let loading = loading.elapsed();
    let mut runs = vec![("current", loaded.rules.clone())];
    if let Some(rules) = proposed {
        runs.push(("proposed", rules));
    }
    let mut results = Vec::new();
    for (name, rules) in &runs {
        let bar = progress_bar(schedule.events, name);
        let run = replay::run(&schedule, &settings, rules, &bar)?;
        bar.finish_and_clear();
        let dir = if runs.len() > 1 {
            out.join(name)
        } else {
            out.to_path_buf()
        };
        replay::write_run(&dir, &run).with_context(|| format!("writing to {}", dir.display()))?;
        results.push((*name, dir, run));
    }
    if let Some((_, _, first)) = results.first() {
        replay::write_dead_letters(out, &schedule, first)
            .with_context(|| format!("writing to {}", out.display()))?;
    }
    let changes = match results.as_slice() {
        [(_, _, current), (_, _, proposed)] => {
            Some(replay::compare(&current.transitions, &proposed.transitions))
        }
        _ => None,
    };
    if let Some(changes) = &changes {
        std::fs::write(
            out.join("compare.json"),
            serde_json::to_vec_pretty(changes)?,
        )
        .with_context(|| format!("writing to {}", out.display()))?;
    }
    match format {
        Format::Json => {
            let runs: Vec<serde_json::Value> = results
                .iter()
                .map(|(name, dir, run)| {
                    serde_json::json!({
                        "rules": name,
                        "out": dir,
                        "transitions": run.transitions.len(),
                        "unknown_reports": run.unknown_reports.len(),
                        "seconds": run.elapsed.as_secs_f64(),
                        "events_per_second": schedule.events as f64 / run.elapsed.as_secs_f64().max(1e-9),
                        "kpis": run.kpis,
                    })
                })
                .collect();
            let summary = serde_json::json!({
                "events": schedule.events,
                "dead_letters": schedule.dead_letters.len(),
                "empty_cells": schedule.empty_cells,
                "end": schedule.end,
                "runs": runs,
                "compare": changes,
            });
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Format::Text => {
            println!(
                "replay: {} events read in {:.1} s, {} dead letters ({}), {} empty cells; data ends at {}",
                schedule.events,
                loading.as_secs_f64(),
                schedule.dead_letters.len(),
                counts(schedule.dead_letters.iter().map(|d| d.reason.as_str())),
                schedule.empty_cells,
                format_event_time(schedule.end.saturating_sub(1)),
            );
            for (name, dir, run) in &results {
                let seconds = run.elapsed.as_secs_f64();
                println!(
                    "{name} rules: {} transitions ({}), {} events of unknown reports, in {seconds:.2} s, {:.0} events/s -> {}",
                    run.transitions.len(),
                    counts(run.transitions.iter().map(|t| t.rule.as_str())),
                    run.unknown_reports.len(),
                    schedule.events as f64 / seconds.max(1e-9),
                    dir.display()
                );
            }
            if let Some(changes) = &changes {
                print_changes(changes);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The per-rule table of `--compare`, with a few examples of each change.
fn print_changes(changes: &[replay::RuleChange]) {
    println!(
        "{:<36} {:>7} {:>7} {:>9} {:>6} {:>7} {:>7}",
        "rule", "before", "after", "unchanged", "added", "removed", "shifted"
    );
    for c in changes {
        println!(
            "{:<36} {:>7} {:>7} {:>9} {:>6} {:>7} {:>7}",
            c.rule,
            c.before,
            c.after,
            c.unchanged,
            c.added.len(),
            c.removed.len(),
            c.shifted.len()
        );
    }
    const EXAMPLES: usize = 3;
    for c in changes.iter().filter(|c| !c.is_unchanged()) {
        println!("{}:", c.rule);
        for e in c.added.iter().take(EXAMPLES) {
            println!("  + {} fires at {}", e.entity, format_event_time(e.start));
        }
        for e in c.removed.iter().take(EXAMPLES) {
            println!(
                "  - {} no longer fires at {}",
                e.entity,
                format_event_time(e.start)
            );
        }
        for (before, after) in c.shifted.iter().take(EXAMPLES) {
            let shift = after.start as i64 - before.start as i64;
            println!(
                "  ~ {} fires at {} instead of {} ({:+} s)",
                after.entity,
                format_event_time(after.start),
                format_event_time(before.start),
                shift / 1000
            );
        }
        let more = (c.added.len() + c.removed.len() + c.shifted.len()).saturating_sub(
            c.added.len().min(EXAMPLES)
                + c.removed.len().min(EXAMPLES)
                + c.shifted.len().min(EXAMPLES),
        );
        if more > 0 {
            println!("  ... and {more} more (compare.json has all)");
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Latency {
            url,
            seconds,
            warmup,
            token_env,
        } => {
            let token = match token_env {
                Some(var) => Some(std::env::var(&var).with_context(|| format!("reading ${var}"))?),
                None => None,
            };
            println!("measuring {url}/api/stream for {seconds} s after {warmup} s of warm-up");
            let report = citybrain_engine::latency::measure(
                &url,
                Duration::from_secs(warmup),
                Duration::from_secs(seconds),
                token.as_deref(),
            )?;
            let l = &report.latencies;
            println!(
                "event time -> visible on /api/stream, {:.0} s:",
                report.measured.as_secs_f64()
            );
            println!("  sensor alerts        {}", l.sensor_alerts.summary());
            println!("  sensor KPI snapshots {}", l.sensor_kpis.summary());
            println!(
                "  citizen alerts       {}  (report clock: allowed lateness by design)",
                l.citizen_alerts.summary()
            );
            println!("  citizen KPI clock    {}", l.citizen_kpis.summary());
            match report.late {
                Some(n) => println!("  late dead letters meanwhile: {n}"),
                None => println!("  late dead letters meanwhile: unknown (/metrics unreadable)"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { out } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for (name, schema) in config::schema::generate() {
                let path = out.join(name);
                std::fs::write(&path, schema)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            config: path,
            inputs,
            compare,
            out,
            workers,
            format,
        } => replay(&path, &inputs, &compare, &out, workers, format),
        Command::Validate { files, format } => {
            let diagnostics = config::validate_files(&files);
            match format {
                Format::Text => {
                    for d in &diagnostics.0 {
                        println!("{d}");
                    }
                    if diagnostics.0.is_empty() {
                        println!("ok: {} file(s) valid", files.len());
                    } else {
                        println!("{} error(s)", diagnostics.0.len());
                    }
                }
                Format::Json => println!("{}", serde_json::to_string_pretty(&diagnostics.0)?),
            }
            Ok(if diagnostics.0.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Run {
            config: path,
            workers,
            processes,
            process_id,
            hostfile,
        } => {
            let mut loaded =
                config::load(&path).map_err(|d| anyhow::anyhow!("invalid config:\n{d}"))?;
            let engine_config = &mut loaded.config.engine;
            if let Some(workers) = workers {
                anyhow::ensure!(workers >= 1, "--workers must be at least 1");
                engine_config.workers = workers;
            }
            if let Some(processes) = processes {
                anyhow::ensure!(processes >= 1, "--processes must be at least 1");
                engine_config.processes = processes;
            }
            if let Some(process_id) = process_id {
                engine_config.process_id = process_id;
            }
            if let Some(hostfile) = hostfile {
                // Relative to where the command runs, as command-line paths are.
                engine_config.hostfile = Some(std::env::current_dir()?.join(hostfile));
            }
            let stop = stop_on_ctrl_c()?;
            let status_interval = loaded.config.engine.status_interval;
            let mut settings = EngineSettings::from_config(&loaded)?;
            // Reloads re-read the config too, so a rule file added to its list is picked up.
            settings.reload.source = RuleSource::Config {
                config: path.clone(),
                files: loaded.rule_files(),
            };
            let engine =
                runtime::start(settings, loaded.rules.clone(), Box::new(print_transition))?;
            reload_on_sighup(engine.reloader()).context("installing the SIGHUP handler")?;
            tracing::info!(
                rules = loaded.rules.len(),
                "engine running; Ctrl-C stops it"
            );
            let mut since_status = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) && !engine.stopping() {
                std::thread::sleep(Duration::from_millis(100));
                since_status += Duration::from_millis(100);
                if since_status >= status_interval {
                    print_status(&engine.status());
                    since_status = Duration::ZERO;
                }
            }
            engine.stop();
            engine.wait()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            seconds,
            workers,
            seed,
            scale,
            http,
        } => {
            let stop = stop_on_ctrl_c()?;
            println!(
                "citybrain demo: in-process Kafka + simulated Ordos city + engine. Ctrl-C stops."
            );
            let options = demo::DemoOptions {
                duration: seconds.map(Duration::from_secs),
                workers,
                seed,
                scale: scale.into(),
                http: Some(http),
            };
            let mut shown_incidents = false;
            let status = demo::run(
                &options,
                stop,
                Box::new(print_transition),
                Box::new(|request| {
                    println!("-> {}: {}", demo::DISPATCH_UNIT, request.line());
                }),
                |addresses| {
                    if let Some(addr) = addresses.http {
                        println!(
                            "-- wall display: http://{addr}/  (API: http://{addr}/api/alerts, metrics: http://{addr}/metrics)"
                        );
                    }
                    println!(
                        "-- dispatch unit: critical alerts are sent to it as signed webhooks; it prints them as `-> {}:` lines and lists the last ones at http://{}/",
                        demo::DISPATCH_UNIT,
                        addresses.dispatch_unit
                    );
                },
                |status, incidents| {
                    if !shown_incidents {
                        println!("-- scripted incidents: {}", incidents.join("; "));
                        shown_incidents = true;
                    }
                    print_status(status);
                },
            )?;
            print_status(&status);
            Ok(ExitCode::SUCCESS)
        }
        Command::Receiver {
            bind,
            secret_env,
            keep,
        } => {
            let text = std::env::var(&secret_env)
                .with_context(|| format!("the environment variable {secret_env} is not set"))?;
            let secret = Secret::parse(&text).context("the signing secret")?;
            let stop = stop_on_ctrl_c()?;
            let unit = DemoReceiver::start(
                bind,
                secret,
                keep,
                Box::new(|request| println!("{}", request.line())),
            )?;
            println!(
                "citybrain receiver: webhooks to http://{addr}/hook, the last {keep} at http://{addr}/. Ctrl-C stops.",
                addr = unit.addr
            );
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
            unit.shutdown();
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate {
            brokers,
            seed,
            scale,
            speed,
            seconds,
        } => {
            let stop = stop_on_ctrl_c()?;
            if let Some(seconds) = seconds {
                let flag = Arc::clone(&stop);
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(seconds));
                    flag.store(true, Ordering::SeqCst);
                });
            }
            let mut simulator = Simulator::new(SimulatorConfig {
                seed,
                start_ms: now_millis(),
                scale: scale.into(),
            });
            let mut producer = SimulationProducer::new(&brokers, SimulationTopics::default())?;
            run_real_time(&mut simulator, &mut producer, speed, &stop)?;
            println!("produced {} messages", producer.sent());
            Ok(ExitCode::SUCCESS)
        }
    }
}
