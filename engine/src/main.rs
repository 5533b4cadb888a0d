//! The `citybrain` command line: run, validate, demo, simulate, schema.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use citybrain_connectors::simulate::{SimulationProducer, SimulationTopics, run_real_time};
use citybrain_connectors::simulator::{Scale, Simulator, SimulatorConfig};
use citybrain_engine::reload::{Reloader, RuleSource, Trigger};
use citybrain_engine::runtime::{self, EngineSettings, Status};
use citybrain_engine::{config, demo};
use citybrain_model::time::{format_event_time, now_millis};
use citybrain_model::{AlertTransition, TransitionState};
use clap::{Parser, Subcommand, ValueEnum};

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

fn stop_on_ctrl_c() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    Ok(stop)
}

/// Reloads the rule files on every `SIGHUP`, from a thread of its own for the process's life.
fn reload_on_sighup(reloader: Arc<Reloader>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    let mut hangups = runtime
        .block_on(async { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) })
        .context("installing the SIGHUP handler")?;
    std::thread::Builder::new()
        .name("citybrain-sighup".into())
        .spawn(move || {
            runtime.block_on(async move {
                while hangups.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the rule files");
                    let reloader = Arc::clone(&reloader);
                    let _ =
                        tokio::task::spawn_blocking(move || reloader.reload(Trigger::Signal)).await;
                }
            });
        })
        .context("starting the SIGHUP thread")?;
    Ok(())
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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Schema { out } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for (name, schema) in config::schema::generate() {
                let path = out.join(name);
                std::fs::write(&path, schema)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
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
        Command::Run { config: path } => {
            let loaded =
                config::load(&path).map_err(|d| anyhow::anyhow!("invalid config:\n{d}"))?;
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
            reload_on_sighup(engine.reloader())?;
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
                |addr| {
                    if let Some(addr) = addr {
                        println!(
                            "-- wall display: http://{addr}/  (API: http://{addr}/api/alerts, metrics: http://{addr}/metrics)"
                        );
                    }
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
