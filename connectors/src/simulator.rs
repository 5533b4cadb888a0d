//! A deterministic simulator of the demo city (Ordos): coal-mine gas and ventilation sensors,
//! greenhouses and a sheep ranch, and citizen reports with their lifecycle.
//!
//! The simulator is pure: no Kafka, no threads, no clocks. The caller drives it with event
//! times through [`Simulator::advance`], and gets wire messages ([`SimMessage`]) in exactly the
//! formats `citybrain_model::decode` reads. The same [`SimulatorConfig`] always produces the
//! same bytes, however the calls to `advance` are chunked: every sensor, device and district
//! draws from its own seeded random stream, in its own event order.
//!
//! On top of realistic normal behaviour, five incidents are scripted relative to `start_ms`
//! and repeat every [`INCIDENT_PERIOD_MS`] (see [`Simulator::incidents`]): a methane build-up
//! on [`METHANE_FACE`], the silent sensor [`SILENT_SENSOR`], the greenhouse [`DRY_GREENHOUSE`]
//! drying out, a report backlog in [`BACKLOG_DISTRICT`], and a fever on [`FEVER_COLLAR`].
//!
//! Times of day (daily rhythms of reports, greenhouse climate, grazing) are taken in Ordos
//! local time (UTC+8) from the event time, so a demo started in the morning starts busy.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::f64::consts::{PI, TAU};

use citybrain_model::registry::{DeviceRecord, GridRecord, RegistryKind, SensorRecord};
use citybrain_model::{Metric, ReportKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// The scripted incidents repeat with this period (15 minutes), counted from `start_ms`.
pub const INCIDENT_PERIOD_MS: u64 = 15 * 60 * 1000;
/// The working face whose methane builds up (incident 1).
pub const METHANE_FACE: &str = "jungar-1/face-2";
/// The sensor that goes silent (incident 2).
pub const SILENT_SENSOR: &str = "jungar-1/face-1/ch4-return";
/// The greenhouse that dries out (incident 3).
pub const DRY_GREENHOUSE: &str = "dalad-agri-park/gh-1";
/// The district with a report backlog (incident 4).
pub const BACKLOG_DISTRICT: &str = "dalad";
/// The collar of the sheep with a fever (incident 5); its device ids are
/// `uxin-ranch/collar-003/body-temp` and `uxin-ranch/collar-003/activity`.
pub const FEVER_COLLAR: &str = "uxin-ranch/collar-003";

// Incident timings, milliseconds after the start of each incident period.
const METHANE_RISE: (u64, u64) = (10_000, 25_000);
const METHANE_FALL: (u64, u64) = (85_000, 105_000);
const SILENCE: (u64, u64) = (45_000, 165_000);
const DRYING: (u64, u64) = (20_000, 140_000);
const IRRIGATION: (u64, u64) = (360_000, 420_000);
const DRY_LEVEL: f64 = 12.0;
const BACKLOG: (u64, u64) = (60_000, 660_000);
const BACKLOG_RATE_FACTOR: f64 = 4.0;
const FEVER_RISE: (u64, u64) = (90_000, 210_000);
const FEVER_FALL: (u64, u64) = (450_000, 570_000);
const FEVER_DEGREES: f64 = 1.6;

/// Cadences, milliseconds.
const CH4_CADENCE_MS: u64 = 1_000;
const MINE_SLOW_CADENCE_MS: u64 = 5_000;
const GREENHOUSE_CADENCE_MS: u64 = 10_000;
const COLLAR_CADENCE_MS: u64 = 30_000;
/// Readings arrive up to this much after their nominal slot.
const MAX_JITTER_MS: u64 = 40;
/// Irrigation brings soil water from its low to its high level in this time.
const IRRIGATION_RAMP_MS: u64 = 60_000;

/// Citizen reports created per millisecond in the whole city at a daily-rhythm factor of 1.
const REPORT_BASE_RATE_PER_MS: f64 = 0.7 / 1000.0;
/// Ordos is UTC+8.
const LOCAL_OFFSET_MS: u64 = 8 * 3_600_000;
const DAY_MS: u64 = 86_400_000;

/// How big a world to simulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Scale {
    /// One mine with two faces, one greenhouse, five sheep, two districts: for fast tests.
    Small,
    /// The whole demo city: nine districts, six mines, four greenhouses, forty sheep.
    #[default]
    Demo,
}

/// What to simulate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimulatorConfig {
    /// Seed of every random choice; the same config always gives the same messages.
    pub seed: u64,
    /// Event time (epoch milliseconds) the simulation starts at; incidents are relative to it.
    pub start_ms: u64,
    /// How big a world.
    pub scale: Scale,
}

/// The stream (topic) a simulated message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimStream {
    /// Mine sensor readings (`mine.readings`).
    Mine,
    /// Farm device readings (`farm.readings`).
    Farm,
    /// Citizen report events (`citizen.reports`).
    Citizen,
    /// Sensor registry (compacted `registry.sensors`).
    Sensors,
    /// Device registry (compacted `registry.devices`).
    Devices,
    /// Grid registry (compacted `registry.grids`).
    Grids,
}

impl SimStream {
    /// Every stream.
    pub const ALL: [SimStream; 6] = [
        SimStream::Mine,
        SimStream::Farm,
        SimStream::Citizen,
        SimStream::Sensors,
        SimStream::Devices,
        SimStream::Grids,
    ];

    /// A short lowercase name (`mine`, `farm`, `citizen`, `sensors`, `devices`, `grids`).
    pub fn as_str(self) -> &'static str {
        match self {
            SimStream::Mine => "mine",
            SimStream::Farm => "farm",
            SimStream::Citizen => "citizen",
            SimStream::Sensors => "sensors",
            SimStream::Devices => "devices",
            SimStream::Grids => "grids",
        }
    }

    /// The registry a registry stream feeds, `None` for event streams.
    pub fn registry_kind(self) -> Option<RegistryKind> {
        match self {
            SimStream::Sensors => Some(RegistryKind::Sensors),
            SimStream::Devices => Some(RegistryKind::Devices),
            SimStream::Grids => Some(RegistryKind::Grids),
            SimStream::Mine | SimStream::Farm | SimStream::Citizen => None,
        }
    }
}

/// One simulated Kafka message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimMessage {
    /// The topic it goes to.
    pub stream: SimStream,
    /// The Kafka key: sensor, device, report or grid id.
    pub key: String,
    /// The JSON value.
    pub payload: Vec<u8>,
    /// Its event time, epoch milliseconds (`start_ms` for registry records).
    pub time: u64,
}

/// The deterministic city simulator. See the module documentation.
pub struct Simulator {
    config: SimulatorConfig,
    /// Events before this time have been emitted.
    position: u64,
    world: World,
    feeds: Vec<Feed>,
    districts: Vec<DistrictGen>,
    pending: BinaryHeap<Reverse<PendingEvent>>,
    registry: Vec<SimMessage>,
}

impl Simulator {
    /// Builds the world for `config`. Nothing is emitted before `config.start_ms`.
    pub fn new(config: SimulatorConfig) -> Self {
        let start = config.start_ms;
        let seed = config.seed;
        let mut world = World {
            start,
            faces: Vec::new(),
            greenhouses: Vec::new(),
        };
        let mut feeds = Vec::new();
        let mut registry = Vec::new();

        let mines: &[(&str, usize)] = match config.scale {
            Scale::Small => &SMALL_MINES,
            Scale::Demo => &DEMO_MINES,
        };
        for &(mine, faces) in mines {
            for n in 1..=faces {
                let face_id = format!("{mine}/face-{n}");
                let methane = face_id == METHANE_FACE;
                let mut rng = entity_rng(seed, &face_id);
                let face = Face {
                    ch4_base: if methane {
                        0.30
                    } else {
                        rng.random_range(0.15..0.28)
                    },
                    ch4_drift: Drift::new(&mut rng, 0.04, (600.0, 1500.0), (120.0, 300.0)),
                    airflow_base: rng.random_range(950.0..1350.0),
                    methane,
                };
                let face_index = world.faces.len();
                world.faces.push(face);
                for &(suffix, metric, location) in &FACE_SENSORS {
                    let id = format!("{face_id}/{suffix}");
                    let mut rng = entity_rng(seed, &id);
                    let cadence = if metric == Metric::Ch4 {
                        CH4_CADENCE_MS
                    } else {
                        MINE_SLOW_CADENCE_MS
                    };
                    let model = mine_model(metric, location, face_index, &mut rng);
                    let record = SensorRecord {
                        sensor: None,
                        mine: mine.to_string(),
                        face: face_id.clone(),
                        kind: metric,
                        cadence_ms: cadence,
                    };
                    push_registry(&mut registry, SimStream::Sensors, &id, &record, start);
                    let silent = id == SILENT_SENSOR;
                    feeds.push(Feed::new(
                        id,
                        SimStream::Mine,
                        metric,
                        cadence,
                        model,
                        rng,
                        start,
                        silent,
                    ));
                }
            }
        }

        let (greenhouses, sheep) = match config.scale {
            Scale::Small => (1, 5),
            Scale::Demo => (4, 40),
        };
        for n in 1..=greenhouses {
            let gh_id = format!("{GREENHOUSE_FARM}/gh-{n}");
            let dries_out = gh_id == DRY_GREENHOUSE;
            let mut rng = entity_rng(seed, &gh_id);
            let greenhouse = if dries_out {
                // Irrigated every 7.5 min, at +6 min and +13.5 min of each incident period, so
                // the scripted irrigation at +6 min is one of its regular ones.
                Greenhouse {
                    period_ms: INCIDENT_PERIOD_MS / 2,
                    phase_ms: INCIDENT_PERIOD_MS / 2 - IRRIGATION.0,
                    low: 22.0,
                    high: 34.0,
                    temp_offset: rng.random_range(-1.0..1.0),
                    dries_out,
                }
            } else {
                let period_ms = rng.random_range(600_000..1_000_000u64);
                Greenhouse {
                    period_ms,
                    phase_ms: rng.random_range(0..period_ms),
                    low: rng.random_range(20.5..23.0),
                    high: rng.random_range(32.0..35.0),
                    temp_offset: rng.random_range(-1.0..1.0),
                    dries_out,
                }
            };
            let gh_index = world.greenhouses.len();
            world.greenhouses.push(greenhouse);
            for &(suffix, metric) in &GREENHOUSE_DEVICES {
                let id = format!("{gh_id}/{suffix}");
                let mut rng = entity_rng(seed, &id);
                let model = match metric {
                    Metric::AirTemp => Model::AirTemp { gh: gh_index },
                    Metric::Humidity => Model::Humidity {
                        gh: gh_index,
                        offset: rng.random_range(-3.0..3.0),
                    },
                    Metric::SoilWater => Model::SoilWater { gh: gh_index },
                    _ => Model::SoilTemp {
                        gh: gh_index,
                        offset: rng.random_range(-0.8..0.8),
                    },
                };
                let record = DeviceRecord {
                    device: None,
                    farm: GREENHOUSE_FARM.to_string(),
                    greenhouse: Some(gh_id.clone()),
                    herd: None,
                    animal: None,
                    kind: metric,
                    cadence_ms: GREENHOUSE_CADENCE_MS,
                };
                push_registry(&mut registry, SimStream::Devices, &id, &record, start);
                feeds.push(Feed::new(
                    id,
                    SimStream::Farm,
                    metric,
                    GREENHOUSE_CADENCE_MS,
                    model,
                    rng,
                    start,
                    false,
                ));
            }
        }
        for n in 1..=sheep {
            let collar = format!("{RANCH}/collar-{n:03}");
            let animal = format!("{RANCH}/sheep-{n:03}");
            let fever = collar == FEVER_COLLAR;
            let mut rng = entity_rng(seed, &collar);
            let body_base = rng.random_range(39.2..39.45);
            let grazing = rng.random_range(30.0..50.0);
            for (suffix, metric) in [
                ("body-temp", Metric::BodyTemp),
                ("activity", Metric::Activity),
            ] {
                let id = format!("{collar}/{suffix}");
                let mut rng = entity_rng(seed, &id);
                let model = match metric {
                    Metric::BodyTemp => Model::BodyTemp {
                        base: body_base,
                        drift: Drift::new(&mut rng, 0.08, (900.0, 2400.0), (200.0, 500.0)),
                        fever,
                    },
                    _ => Model::Activity { grazing, fever },
                };
                let record = DeviceRecord {
                    device: None,
                    farm: RANCH.to_string(),
                    greenhouse: None,
                    herd: Some(HERD.to_string()),
                    animal: Some(animal.clone()),
                    kind: metric,
                    cadence_ms: COLLAR_CADENCE_MS,
                };
                push_registry(&mut registry, SimStream::Devices, &id, &record, start);
                feeds.push(Feed::new(
                    id,
                    SimStream::Farm,
                    metric,
                    COLLAR_CADENCE_MS,
                    model,
                    rng,
                    start,
                    false,
                ));
            }
        }

        let districts: &[DistrictDef] = match config.scale {
            Scale::Small => &SMALL_DISTRICTS,
            Scale::Demo => &DEMO_DISTRICTS,
        };
        let total_weight: f64 = districts.iter().map(|d| d.weight).sum();
        let mut generators = Vec::new();
        for def in districts {
            let mut grids = Vec::new();
            let kind = if def.urban { "community" } else { "village" };
            for town in def.towns {
                let town_id = format!("{}/{town}", def.id);
                for v in 1..=def.villages_per_town {
                    let grid = format!("{town_id}/{kind}-{v:02}");
                    let record = GridRecord {
                        grid: None,
                        village: grid.clone(),
                        town: town_id.clone(),
                        district: def.id.to_string(),
                    };
                    push_registry(&mut registry, SimStream::Grids, &grid, &record, start);
                    grids.push((grid, town_id.clone()));
                }
            }
            let base_rate = if total_weight > 0.0 {
                REPORT_BASE_RATE_PER_MS * def.weight / total_weight
            } else {
                0.0
            };
            generators.push(DistrictGen::new(
                def,
                grids,
                base_rate,
                entity_rng(seed, &format!("reports/{}", def.id)),
                start,
            ));
        }
        registry.sort_by(|a, b| (a.stream, &a.key).cmp(&(b.stream, &b.key)));

        Simulator {
            position: start,
            config,
            world,
            feeds,
            districts: generators,
            pending: BinaryHeap::new(),
            registry,
        }
    }

    /// Registry records (sensors, devices, grids) as messages for the compacted registry
    /// topics: key = id, payload = JSON ([`SensorRecord`], [`DeviceRecord`], [`GridRecord`]),
    /// time = `start_ms`. Sorted by stream, then key.
    pub fn registry(&self) -> Vec<SimMessage> {
        self.registry.clone()
    }

    /// Appends every event with event time in [previous `to`, `to`) to `out`, sorted by time
    /// (ties by stream, then key). The first window starts at `start_ms`. Calls are monotone: a
    /// `to` not after the previous one appends nothing. The result does not depend on how the
    /// time is split into calls.
    pub fn advance(&mut self, to: u64, out: &mut Vec<SimMessage>) {
        if to <= self.position {
            return;
        }
        let first = out.len();
        for feed in &mut self.feeds {
            feed.emit_until(to, &self.world, out);
        }
        for district in &mut self.districts {
            district.create_until(to, &mut self.pending, out);
        }
        while let Some(Reverse(next)) = self.pending.peek() {
            if next.time >= to {
                break;
            }
            if let Some(Reverse(event)) = self.pending.pop() {
                event.emit(out);
            }
        }
        out[first..].sort_by(|a, b| (a.time, a.stream, &a.key).cmp(&(b.time, b.stream, &b.key)));
        self.position = to;
    }

    /// Human description of the scripted incidents and when (relative to start) they happen.
    pub fn incidents(&self) -> Vec<String> {
        let every = format!("repeats every {}", duration(INCIDENT_PERIOD_MS));
        vec![
            format!(
                "{} to {}: methane build-up on working face {METHANE_FACE}: its ch4 sensors rise from ~0.4% \
                 to ~1.6% by {} (crossing 1.0% at about +18 s), stay high until {}, and are back below 0.5% \
                 by {}; airflow and air velocity on the face drop by a quarter meanwhile ({every})",
                offset(METHANE_RISE.0),
                offset(METHANE_FALL.1),
                offset(METHANE_RISE.1),
                offset(METHANE_FALL.0),
                offset(METHANE_FALL.1),
            ),
            format!(
                "{} to {}: sensor {SILENT_SENSOR} goes silent (no readings at all), then resumes ({every})",
                offset(SILENCE.0),
                offset(SILENCE.1),
            ),
            format!(
                "{} to {}: greenhouse {DRY_GREENHOUSE} dries out: soil_water falls steadily to ~{DRY_LEVEL}% by {} \
                 and stays there until irrigation at {}, back to ~34% by {} ({every})",
                offset(DRYING.0),
                offset(IRRIGATION.1),
                offset(DRYING.1),
                offset(IRRIGATION.0),
                offset(IRRIGATION.1),
            ),
            format!(
                "{} to {}: report backlog in district {BACKLOG_DISTRICT}: reports are created at {BACKLOG_RATE_FACTOR}x \
                 the usual rate and none is dispatched, resolved, escalated or followed up until {}, when the \
                 backlog drains within about 2.5 min ({every})",
                offset(BACKLOG.0),
                offset(BACKLOG.1),
                offset(BACKLOG.1),
            ),
            format!(
                "{} to {}: sheep with a fever (collar {FEVER_COLLAR}): body_temp rises to ~41 C by {}, stays \
                 there until {}, back to normal by {}; its activity drops meanwhile ({every})",
                offset(FEVER_RISE.0),
                offset(FEVER_FALL.1),
                offset(FEVER_RISE.1),
                offset(FEVER_FALL.0),
                offset(FEVER_FALL.1),
            ),
        ]
    }

    /// The configuration this simulator was built with.
    pub fn config(&self) -> &SimulatorConfig {
        &self.config
    }

    /// The `to` of the last [`advance`](Self::advance) (`start_ms` before the first).
    pub fn position(&self) -> u64 {
        self.position
    }
}

// ---------------------------------------------------------------------------------------------
// The world.

const SMALL_MINES: [(&str, usize); 1] = [("jungar-1", 2)];
const DEMO_MINES: [(&str, usize); 6] = [
    ("jungar-1", 4),
    ("jungar-2", 3),
    ("dalad-1", 3),
    ("ejin-horo-1", 4),
    ("ejin-horo-2", 3),
    ("otog-1", 3),
];

/// Where on a working face a sensor sits.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Location {
    /// At the working face (methane T1).
    Face,
    /// Upper corner of the goaf side, where methane accumulates most (T0).
    UpperCorner,
    /// On the shearer.
    Shearer,
    /// In the return airway of the face (T2).
    Return,
    /// In the return airway near the junction, mixed air (T3).
    Mixed,
    /// In the intake airway.
    Intake,
}

impl Location {
    /// Normal methane relative to the face level.
    fn ch4_factor(self) -> f64 {
        match self {
            Location::UpperCorner => 1.3,
            Location::Shearer => 1.1,
            Location::Face | Location::Intake => 1.0,
            Location::Return => 0.85,
            Location::Mixed => 0.7,
        }
    }

    /// Methane at the height of the build-up incident.
    fn ch4_peak(self) -> f64 {
        match self {
            Location::UpperCorner => 1.75,
            Location::Shearer => 1.65,
            Location::Face | Location::Intake => 1.6,
            Location::Return => 1.4,
            Location::Mixed => 1.25,
        }
    }
}

/// The sensors of every working face: id suffix, metric, location.
const FACE_SENSORS: [(&str, Metric, Location); 12] = [
    ("ch4-face", Metric::Ch4, Location::Face),
    ("ch4-upper", Metric::Ch4, Location::UpperCorner),
    ("ch4-shearer", Metric::Ch4, Location::Shearer),
    ("ch4-return", Metric::Ch4, Location::Return),
    ("ch4-mixed", Metric::Ch4, Location::Mixed),
    ("co-upper", Metric::Co, Location::UpperCorner),
    ("co-return", Metric::Co, Location::Return),
    ("velocity-intake", Metric::AirVelocity, Location::Intake),
    ("velocity-return", Metric::AirVelocity, Location::Return),
    ("airflow-return", Metric::Airflow, Location::Return),
    ("temp-face", Metric::Temperature, Location::Face),
    ("temp-return", Metric::Temperature, Location::Return),
];

const GREENHOUSE_FARM: &str = "dalad-agri-park";
const GREENHOUSE_DEVICES: [(&str, Metric); 4] = [
    ("air-temp", Metric::AirTemp),
    ("humidity", Metric::Humidity),
    ("soil-water", Metric::SoilWater),
    ("soil-temp", Metric::SoilTemp),
];
const RANCH: &str = "uxin-ranch";
const HERD: &str = "uxin-ranch/herd-1";

/// A district or banner of Ordos and its towns (sumu, towns, street offices).
struct DistrictDef {
    id: &'static str,
    /// Three letters in report ids.
    code: &'static str,
    /// Urban districts have communities and more housing and neighbour reports.
    urban: bool,
    /// Share of the city's reports (roughly the population).
    weight: f64,
    towns: &'static [&'static str],
    villages_per_town: usize,
}

const DEMO_DISTRICTS: [DistrictDef; 9] = [
    DistrictDef {
        id: "dongsheng",
        code: "DSH",
        urban: true,
        weight: 0.24,
        towns: &["tianjiao", "jiaotong", "linyin", "tongchuan"],
        villages_per_town: 6,
    },
    DistrictDef {
        id: "kangbashi",
        code: "KBS",
        urban: true,
        weight: 0.07,
        towns: &["qingchunshan", "binhe", "kangxin", "habagexi"],
        villages_per_town: 6,
    },
    DistrictDef {
        id: "dalad",
        code: "DLT",
        urban: false,
        weight: 0.13,
        towns: &[
            "shulinzhao",
            "wangaizhao",
            "bainijing",
            "zhaojun",
            "jigesitai",
            "enggebei",
        ],
        villages_per_town: 5,
    },
    DistrictDef {
        id: "jungar",
        code: "JGR",
        urban: false,
        weight: 0.14,
        towns: &["xuejiawan", "shagedu", "dalu", "narisong", "longkou"],
        villages_per_town: 5,
    },
    DistrictDef {
        id: "otog-front",
        code: "OTF",
        urban: false,
        weight: 0.04,
        towns: &["aolezhaoqi", "shanghaimiao", "chengchuan", "angsu"],
        villages_per_town: 5,
    },
    DistrictDef {
        id: "otog",
        code: "OTG",
        urban: false,
        weight: 0.06,
        towns: &["wulan", "qipanjing", "mengxi", "arbas"],
        villages_per_town: 5,
    },
    DistrictDef {
        id: "hangjin",
        code: "HJN",
        urban: false,
        weight: 0.05,
        towns: &["xini", "duguitala", "jirigalangtu", "huhemudu"],
        villages_per_town: 5,
    },
    // Uxin: 6 town-level and 78 village-level mediation centres.
    DistrictDef {
        id: "uxin",
        code: "UXN",
        urban: false,
        weight: 0.06,
        towns: &[
            "galutu",
            "wushenzhao",
            "tuke",
            "wulantaolegai",
            "sulide",
            "wudinghe",
        ],
        villages_per_town: 13,
    },
    DistrictDef {
        id: "ejin-horo",
        code: "EJH",
        urban: false,
        weight: 0.11,
        towns: &[
            "altanxire",
            "wulanmulun",
            "ejinhoro",
            "narintaohai",
            "hongqinghe",
            "suburga",
        ],
        villages_per_town: 5,
    },
];

const SMALL_DISTRICTS: [DistrictDef; 2] = [
    DistrictDef {
        id: "dalad",
        code: "DLT",
        urban: false,
        weight: 0.13,
        towns: &["shulinzhao", "wangaizhao"],
        villages_per_town: 3,
    },
    DistrictDef {
        id: "uxin",
        code: "UXN",
        urban: false,
        weight: 0.06,
        towns: &["galutu", "tuke"],
        villages_per_town: 3,
    },
];

/// Report categories: name, department handling it, weight in urban and in rural districts.
const CATEGORIES: [(&str, &str, f64, f64); 7] = [
    ("road_damage", "roads", 0.17, 0.20),
    ("missing_safety_railing", "roads", 0.08, 0.10),
    ("old_compound_repair", "housing", 0.25, 0.05),
    ("wage_dispute", "labour", 0.12, 0.18),
    ("land_dispute", "mediation", 0.03, 0.22),
    ("neighbour_dispute", "mediation", 0.22, 0.13),
    ("environment", "environment", 0.13, 0.12),
];

/// Relative report rate per local hour of day (interpolated between hours).
const HOURLY_REPORTS: [f64; 24] = [
    0.40, 0.35, 0.35, 0.35, 0.40, 0.50, 0.65, 0.85, 1.15, 1.40, 1.45, 1.30, 1.05, 1.00, 1.20, 1.35,
    1.30, 1.15, 1.00, 0.90, 0.80, 0.65, 0.55, 0.45,
];
const HOURLY_REPORTS_MAX: f64 = 1.45;

/// Shared state the readings depend on: per-face methane level and per-greenhouse irrigation.
struct World {
    start: u64,
    faces: Vec<Face>,
    greenhouses: Vec<Greenhouse>,
}

struct Face {
    ch4_base: f64,
    ch4_drift: Drift,
    airflow_base: f64,
    /// The face of the methane incident.
    methane: bool,
}

struct Greenhouse {
    /// Irrigation period.
    period_ms: u64,
    /// Where in its period the greenhouse is at `start_ms`.
    phase_ms: u64,
    /// Soil water when irrigation starts.
    low: f64,
    /// Soil water right after irrigation.
    high: f64,
    temp_offset: f64,
    /// The greenhouse of the drying incident.
    dries_out: bool,
}

impl Greenhouse {
    /// Milliseconds since the last irrigation started.
    fn since_irrigation(&self, rel: u64) -> u64 {
        rel.saturating_add(self.phase_ms) % self.period_ms.max(1)
    }

    /// Soil water on the regular schedule: irrigation ramps up, then it dries linearly.
    fn regular_soil_water(&self, rel: u64) -> f64 {
        let since = self.since_irrigation(rel);
        let span = self.high - self.low;
        if since < IRRIGATION_RAMP_MS {
            self.low + span * since as f64 / IRRIGATION_RAMP_MS as f64
        } else {
            let drying = self.period_ms.saturating_sub(IRRIGATION_RAMP_MS).max(1);
            self.high - span * (since - IRRIGATION_RAMP_MS) as f64 / drying as f64
        }
    }

    fn soil_water(&self, rel: u64) -> f64 {
        if !self.dries_out {
            return self.regular_soil_water(rel);
        }
        let off = rel % INCIDENT_PERIOD_MS;
        if (DRYING.0..IRRIGATION.0).contains(&off) {
            let from = self.regular_soil_water(rel - off + DRYING.0);
            lerp(from, DRY_LEVEL, ramp(off, DRYING))
        } else if (IRRIGATION.0..IRRIGATION.1).contains(&off) {
            lerp(DRY_LEVEL, self.high, ramp(off, IRRIGATION))
        } else {
            self.regular_soil_water(rel)
        }
    }

    /// Air temperature without noise: warm days, cool nights, glass keeps it above ~14 C.
    fn air_temp(&self, t: u64) -> f64 {
        21.0 + 6.0 * (TAU * (local_hour(t) - 9.0) / 24.0).sin() + self.temp_offset
    }
}

/// A smooth slow drift: the sum of two sine waves.
#[derive(Clone, Copy, Debug)]
struct Drift {
    /// (amplitude, period in seconds, phase in radians)
    terms: [(f64, f64, f64); 2],
}

impl Drift {
    /// A drift of at most `amplitude`, with a slow and a faster wave (periods in seconds).
    fn new(rng: &mut StdRng, amplitude: f64, slow: (f64, f64), fast: (f64, f64)) -> Self {
        Drift {
            terms: [
                (
                    amplitude * 0.7 * rng.random_range(0.5..1.0),
                    rng.random_range(slow.0..slow.1),
                    rng.random_range(0.0..TAU),
                ),
                (
                    amplitude * 0.3 * rng.random_range(0.5..1.0),
                    rng.random_range(fast.0..fast.1),
                    rng.random_range(0.0..TAU),
                ),
            ],
        }
    }

    fn at(&self, rel_seconds: f64) -> f64 {
        self.terms
            .iter()
            .map(|&(amplitude, period, phase)| {
                amplitude * (TAU * rel_seconds / period + phase).sin()
            })
            .sum()
    }
}

/// How a feed's value is made.
enum Model {
    Ch4 {
        face: usize,
        factor: f64,
        peak: f64,
        bias: f64,
    },
    Co {
        base: f64,
        drift: Drift,
    },
    AirVelocity {
        face: usize,
        base: f64,
        drift: Drift,
    },
    Airflow {
        face: usize,
        drift: Drift,
    },
    MineTemp {
        base: f64,
        drift: Drift,
    },
    AirTemp {
        gh: usize,
    },
    Humidity {
        gh: usize,
        offset: f64,
    },
    SoilWater {
        gh: usize,
    },
    SoilTemp {
        gh: usize,
        offset: f64,
    },
    BodyTemp {
        base: f64,
        drift: Drift,
        fever: bool,
    },
    Activity {
        grazing: f64,
        fever: bool,
    },
}

fn mine_model(metric: Metric, location: Location, face: usize, rng: &mut StdRng) -> Model {
    match metric {
        Metric::Ch4 => Model::Ch4 {
            face,
            factor: location.ch4_factor(),
            peak: location.ch4_peak(),
            bias: rng.random_range(-0.015..0.015),
        },
        Metric::Co => Model::Co {
            base: rng.random_range(2.0..6.0),
            drift: Drift::new(rng, 1.2, (600.0, 1800.0), (120.0, 400.0)),
        },
        Metric::AirVelocity => Model::AirVelocity {
            face,
            base: if location == Location::Intake {
                rng.random_range(2.2..2.7)
            } else {
                rng.random_range(1.7..2.2)
            },
            drift: Drift::new(rng, 0.12, (600.0, 1800.0), (120.0, 400.0)),
        },
        Metric::Airflow => Model::Airflow {
            face,
            drift: Drift::new(rng, 50.0, (600.0, 1800.0), (120.0, 400.0)),
        },
        _ => Model::MineTemp {
            base: if location == Location::Face {
                rng.random_range(24.0..27.0)
            } else {
                rng.random_range(21.0..24.0)
            },
            drift: Drift::new(rng, 0.6, (900.0, 2400.0), (200.0, 600.0)),
        },
    }
}

impl World {
    /// The value of `model` at event time `t`. Draws the same number of random numbers for a
    /// model whatever the time, so every feed's random stream stays aligned with its readings.
    fn value(&self, model: &Model, t: u64, rng: &mut StdRng) -> f64 {
        let rel = t.saturating_sub(self.start);
        let rel_s = rel as f64 / 1000.0;
        let off = rel % INCIDENT_PERIOD_MS;
        match *model {
            Model::Ch4 {
                face,
                factor,
                peak,
                bias,
            } => {
                let (level, weight) = match self.faces.get(face) {
                    Some(f) => (
                        f.ch4_base + f.ch4_drift.at(rel_s),
                        if f.methane { methane_weight(off) } else { 0.0 },
                    ),
                    None => (0.2, 0.0),
                };
                let normal = (level * factor + bias + 0.008 * gauss(rng)).clamp(0.03, 0.49);
                let high = peak + 0.025 * gauss(rng);
                round(lerp(normal, high, weight), 2)
            }
            Model::Co { base, drift } => round(
                (base + drift.at(rel_s) + 0.3 * gauss(rng)).clamp(0.0, 10.0),
                1,
            ),
            Model::AirVelocity { face, base, drift } => {
                let normal = (base + drift.at(rel_s) + 0.03 * gauss(rng)).clamp(1.0, 3.0);
                round(normal * self.ventilation(face, off), 2)
            }
            Model::Airflow { face, drift } => {
                let base = self.faces.get(face).map_or(1100.0, |f| f.airflow_base);
                let normal = (base + drift.at(rel_s) + 8.0 * gauss(rng)).clamp(800.0, 1500.0);
                round(normal * self.ventilation(face, off), 1)
            }
            Model::MineTemp { base, drift } => round(
                (base + drift.at(rel_s) + 0.08 * gauss(rng)).clamp(20.0, 28.0),
                1,
            ),
            Model::AirTemp { gh } => {
                let air = self.greenhouses.get(gh).map_or(21.0, |g| g.air_temp(t));
                round(air + 0.15 * gauss(rng), 1)
            }
            Model::Humidity { gh, offset } => {
                let (air, since) = self.greenhouses.get(gh).map_or((21.0, u64::MAX), |g| {
                    (g.air_temp(t), g.since_irrigation(rel))
                });
                // Irrigation raises humidity, which then decays over a few minutes.
                let after_irrigation = 10.0 * (-(since as f64) / 180_000.0).exp();
                let humidity =
                    68.0 + offset - 1.8 * (air - 21.0) + after_irrigation + 0.8 * gauss(rng);
                round(humidity.clamp(35.0, 98.0), 1)
            }
            Model::SoilWater { gh } => {
                let water = self.greenhouses.get(gh).map_or(28.0, |g| g.soil_water(rel));
                round((water + 0.15 * gauss(rng)).clamp(5.0, 45.0), 1)
            }
            Model::SoilTemp { gh, offset } => {
                let soil = 18.0 + 2.5 * (TAU * (local_hour(t) - 12.0) / 24.0).sin() + offset;
                let soil = soil
                    + self
                        .greenhouses
                        .get(gh)
                        .map_or(0.0, |g| 0.3 * g.temp_offset);
                round(soil + 0.1 * gauss(rng), 1)
            }
            Model::BodyTemp { base, drift, fever } => {
                let daily = 0.15 * (TAU * (local_hour(t) - 15.0) / 24.0).sin();
                let normal = (base + daily + drift.at(rel_s) + 0.06 * gauss(rng)).clamp(39.0, 39.8);
                let weight = if fever { fever_weight(off) } else { 0.0 };
                round(normal + FEVER_DEGREES * weight, 2)
            }
            Model::Activity { grazing, fever } => {
                let hour = local_hour(t);
                let daylight = if (6.0..20.0).contains(&hour) {
                    (PI * (hour - 6.0) / 14.0).sin().max(0.0)
                } else {
                    0.0
                };
                let night = 5.0;
                let level = night + (grazing - night) * daylight + 4.0 * gauss(rng);
                let weight = if fever { fever_weight(off) } else { 0.0 };
                round((level * (1.0 - 0.7 * weight)).max(0.0), 1)
            }
        }
    }

    /// Factor on airflow and air velocity: the methane incident comes with weaker ventilation.
    fn ventilation(&self, face: usize, off: u64) -> f64 {
        match self.faces.get(face) {
            Some(f) if f.methane => 1.0 - 0.25 * methane_weight(off),
            _ => 1.0,
        }
    }
}

/// 0 before the methane incident, rising to 1, holding, falling back to 0.
fn methane_weight(off: u64) -> f64 {
    if off < METHANE_FALL.0 {
        ramp(off, METHANE_RISE)
    } else {
        1.0 - ramp(off, METHANE_FALL)
    }
}

/// 0 before the fever, rising to 1, holding, falling back to 0.
fn fever_weight(off: u64) -> f64 {
    if off < FEVER_FALL.0 {
        ramp(off, FEVER_RISE)
    } else {
        1.0 - ramp(off, FEVER_FALL)
    }
}

/// 0 before `window.0`, 1 after `window.1`, linear between.
fn ramp(off: u64, window: (u64, u64)) -> f64 {
    if off <= window.0 {
        0.0
    } else if off >= window.1 {
        1.0
    } else {
        (off - window.0) as f64 / (window.1 - window.0) as f64
    }
}

fn lerp(from: f64, to: f64, weight: f64) -> f64 {
    from + (to - from) * weight
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// A standard normal sample, truncated to +-3 (Box-Muller; always draws two numbers).
fn gauss(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random();
    let u2: f64 = rng.random();
    let r = (-2.0 * (1.0 - u1).ln()).sqrt();
    (r * (TAU * u2).cos()).clamp(-3.0, 3.0)
}

/// Hour of day in Ordos (UTC+8), 0.0 to 24.0.
fn local_hour(t: u64) -> f64 {
    (t.saturating_add(LOCAL_OFFSET_MS) % DAY_MS) as f64 / 3_600_000.0
}

/// The local (UTC+8) date of `t` as `YYYYMMDD`.
fn local_date(t: u64) -> String {
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let days = (t.saturating_add(LOCAL_OFFSET_MS) / DAY_MS) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}")
}

/// A random stream of its own for each entity, so entities do not disturb each other.
fn entity_rng(seed: u64, id: &str) -> StdRng {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    StdRng::seed_from_u64(splitmix(seed ^ splitmix(hash)))
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn encode<T: Serialize>(value: &T) -> Option<Vec<u8>> {
    match serde_json::to_vec(value) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::warn!(%error, "simulator: could not encode a message; skipped");
            None
        }
    }
}

fn push_registry<T: Serialize>(
    registry: &mut Vec<SimMessage>,
    stream: SimStream,
    key: &str,
    record: &T,
    time: u64,
) {
    if let Some(payload) = encode(record) {
        registry.push(SimMessage {
            stream,
            key: key.to_string(),
            payload,
            time,
        });
    }
}

/// `+1 min 30 s` style offsets.
fn offset(ms: u64) -> String {
    format!("+{}", duration(ms))
}

fn duration(ms: u64) -> String {
    let seconds = ms / 1000;
    match (seconds / 60, seconds % 60) {
        (0, s) => format!("{s} s"),
        (m, 0) => format!("{m} min"),
        (m, s) => format!("{m} min {s} s"),
    }
}

// ---------------------------------------------------------------------------------------------
// Readings.

#[derive(Serialize)]
struct WireMineReading<'a> {
    sensor: &'a str,
    ts: u64,
    metric: &'static str,
    value: f64,
}

#[derive(Serialize)]
struct WireFarmReading<'a> {
    device: &'a str,
    ts: u64,
    metric: &'static str,
    value: f64,
}

/// One sensor or device sending readings at a fixed cadence (with a little jitter).
struct Feed {
    id: String,
    stream: SimStream,
    metric: Metric,
    cadence: u64,
    model: Model,
    rng: StdRng,
    /// Nominal time of the next reading.
    slot: u64,
    /// Actual time of the next reading (`slot` plus jitter).
    next: u64,
    /// The sensor of the silence incident.
    silent: bool,
}

impl Feed {
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: String,
        stream: SimStream,
        metric: Metric,
        cadence: u64,
        model: Model,
        mut rng: StdRng,
        start: u64,
        silent: bool,
    ) -> Self {
        let cadence = cadence.max(1);
        let slot = start.saturating_add(rng.random_range(0..cadence));
        let next = slot.saturating_add(rng.random_range(0..MAX_JITTER_MS));
        Feed {
            id,
            stream,
            metric,
            cadence,
            model,
            rng,
            slot,
            next,
            silent,
        }
    }

    fn emit_until(&mut self, to: u64, world: &World, out: &mut Vec<SimMessage>) {
        while self.next < to {
            let time = self.next;
            let value = world.value(&self.model, time, &mut self.rng);
            self.slot = self.slot.saturating_add(self.cadence);
            self.next = self
                .slot
                .saturating_add(self.rng.random_range(0..MAX_JITTER_MS));
            let off = time.saturating_sub(world.start) % INCIDENT_PERIOD_MS;
            if self.silent && (SILENCE.0..SILENCE.1).contains(&off) {
                continue;
            }
            let payload = match self.stream {
                SimStream::Mine => encode(&WireMineReading {
                    sensor: &self.id,
                    ts: time,
                    metric: self.metric.as_str(),
                    value,
                }),
                _ => encode(&WireFarmReading {
                    device: &self.id,
                    ts: time,
                    metric: self.metric.as_str(),
                    value,
                }),
            };
            if let Some(payload) = payload {
                out.push(SimMessage {
                    stream: self.stream,
                    key: self.id.clone(),
                    payload,
                    time,
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Citizen reports.

#[derive(Serialize)]
struct WireReport<'a> {
    report: &'a str,
    ts: u64,
    kind: ReportKind,
    category: &'a str,
    grid: &'a str,
    unit: Option<&'a str>,
}

fn report_message(
    report: &str,
    time: u64,
    kind: ReportKind,
    category: &str,
    grid: &str,
    unit: Option<&str>,
) -> Option<SimMessage> {
    let payload = encode(&WireReport {
        report,
        ts: time,
        kind,
        category,
        grid,
        unit,
    })?;
    Some(SimMessage {
        stream: SimStream::Citizen,
        key: report.to_string(),
        payload,
        time,
    })
}

/// A scheduled lifecycle event of a report. Ordered by time first (the heap is a min-heap
/// through `Reverse`).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PendingEvent {
    time: u64,
    report: String,
    step: u8,
    kind: ReportKind,
    category: &'static str,
    grid: String,
    unit: Option<String>,
}

impl PendingEvent {
    fn emit(&self, out: &mut Vec<SimMessage>) {
        if let Some(message) = report_message(
            &self.report,
            self.time,
            self.kind,
            self.category,
            &self.grid,
            self.unit.as_deref(),
        ) {
            out.push(message);
        }
    }
}

/// Creates one district's reports (a Poisson process with a daily rhythm, by thinning) and
/// plans each report's whole lifecycle when it is created.
struct DistrictGen {
    id: &'static str,
    code: &'static str,
    urban: bool,
    /// (grid id, town id)
    grids: Vec<(String, String)>,
    /// Reports per millisecond at rhythm factor 1.
    base_rate: f64,
    /// The district of the backlog incident.
    backlog: bool,
    start: u64,
    rng: StdRng,
    /// Time of the next candidate report.
    next: u64,
    seq: u64,
}

impl DistrictGen {
    fn new(
        def: &DistrictDef,
        grids: Vec<(String, String)>,
        base_rate: f64,
        rng: StdRng,
        start: u64,
    ) -> Self {
        let mut generator = DistrictGen {
            id: def.id,
            code: def.code,
            urban: def.urban,
            grids,
            base_rate,
            backlog: def.id == BACKLOG_DISTRICT,
            start,
            rng,
            next: start,
            seq: 0,
        };
        generator.next = generator.next_candidate(start);
        generator
    }

    fn max_rate(&self) -> f64 {
        let backlog = if self.backlog {
            BACKLOG_RATE_FACTOR
        } else {
            1.0
        };
        self.base_rate * HOURLY_REPORTS_MAX * backlog
    }

    fn rate(&self, t: u64) -> f64 {
        let hour = local_hour(t);
        let index = (hour.floor() as usize) % 24;
        let factor = lerp(
            HOURLY_REPORTS[index],
            HOURLY_REPORTS[(index + 1) % 24],
            hour - hour.floor(),
        );
        let backlog = if self.backlog && self.in_backlog(t) {
            BACKLOG_RATE_FACTOR
        } else {
            1.0
        };
        self.base_rate * factor * backlog
    }

    fn in_backlog(&self, t: u64) -> bool {
        let off = t.saturating_sub(self.start) % INCIDENT_PERIOD_MS;
        (BACKLOG.0..BACKLOG.1).contains(&off)
    }

    /// The candidate after `t`: exponential gap at the maximum rate.
    fn next_candidate(&mut self, t: u64) -> u64 {
        let max_rate = self.max_rate();
        if max_rate <= 0.0 {
            return u64::MAX;
        }
        let u: f64 = self.rng.random();
        let gap = (-(1.0 - u).ln() / max_rate).ceil().max(1.0);
        t.saturating_add(gap as u64)
    }

    fn create_until(
        &mut self,
        to: u64,
        pending: &mut BinaryHeap<Reverse<PendingEvent>>,
        out: &mut Vec<SimMessage>,
    ) {
        while self.next < to {
            let t = self.next;
            self.next = self.next_candidate(t);
            let accept: f64 = self.rng.random();
            if accept * self.max_rate() < self.rate(t) {
                self.create(t, pending, out);
            }
        }
    }

    fn create(
        &mut self,
        t: u64,
        pending: &mut BinaryHeap<Reverse<PendingEvent>>,
        out: &mut Vec<SimMessage>,
    ) {
        if self.grids.is_empty() {
            return;
        }
        self.seq += 1;
        let report = format!("R-{}-{}-{:05}", local_date(t), self.code, self.seq);
        let grid_index = self.rng.random_range(0..self.grids.len());
        let (grid, town) = match self.grids.get(grid_index) {
            Some((grid, town)) => (grid.clone(), town.clone()),
            None => return,
        };
        let (category, department) = self.category();
        if let Some(message) =
            report_message(&report, t, ReportKind::Created, category, &grid, None)
        {
            out.push(message);
        }
        for (step, (time, kind, unit)) in self
            .plan(t, &grid, &town, department)
            .into_iter()
            .enumerate()
        {
            pending.push(Reverse(PendingEvent {
                time,
                report: report.clone(),
                step: u8::try_from(step).unwrap_or(u8::MAX),
                kind,
                category,
                grid: grid.clone(),
                unit: Some(unit),
            }));
        }
    }

    fn category(&mut self) -> (&'static str, &'static str) {
        let weight = |c: &(&str, &str, f64, f64)| if self.urban { c.2 } else { c.3 };
        let total: f64 = CATEGORIES.iter().map(weight).sum();
        let mut pick = self.rng.random::<f64>() * total;
        for c in &CATEGORIES {
            pick -= weight(c);
            if pick < 0.0 {
                return (c.0, c.1);
            }
        }
        ("environment", "environment")
    }

    /// The lifecycle after creation: dispatch to the village grid's unit, then resolution or
    /// escalation (village -> town -> district). About 85% of reports end resolved; the rest
    /// stay open at district level. Some resolved reports are reopened, many followed up.
    fn plan(
        &mut self,
        created: u64,
        grid: &str,
        town: &str,
        department: &str,
    ) -> Vec<(u64, ReportKind, String)> {
        const SECOND: u64 = 1000;
        const MINUTE: u64 = 60 * SECOND;
        let mut events = Vec::new();
        let village_unit = format!("{grid}/{department}");
        let mut t = self.after(created, 45 * SECOND, 5 * MINUTE);
        events.push((t, ReportKind::Dispatched, village_unit.clone()));

        let level: f64 = self.rng.random();
        let resolved_unit = if level < 0.75 {
            t = self.after(t, 2 * MINUTE, 15 * MINUTE);
            Some(village_unit)
        } else {
            let town_unit = format!("{town}/{department}");
            t = self.after(t, 8 * MINUTE, 15 * MINUTE);
            events.push((t, ReportKind::Escalated, town_unit.clone()));
            if level < 0.81 {
                t = self.after(t, 2 * MINUTE, 15 * MINUTE);
                Some(town_unit)
            } else {
                let district_unit = format!("{}/{department}", self.id);
                t = self.after(t, 10 * MINUTE, 20 * MINUTE);
                events.push((t, ReportKind::Escalated, district_unit.clone()));
                if level < 0.85 {
                    t = self.after(t, 5 * MINUTE, 30 * MINUTE);
                    Some(district_unit)
                } else {
                    None
                }
            }
        };
        if let Some(unit) = resolved_unit {
            events.push((t, ReportKind::Resolved, unit.clone()));
            if self.rng.random::<f64>() < 0.03 {
                t = self.after(t, MINUTE, 10 * MINUTE);
                events.push((t, ReportKind::Reopened, unit.clone()));
                t = self.after(t, 3 * MINUTE, 10 * MINUTE);
                events.push((t, ReportKind::Resolved, unit.clone()));
            }
            if self.rng.random::<f64>() < 0.4 {
                t = self.after(t, 5 * MINUTE, 20 * MINUTE);
                events.push((t, ReportKind::FollowedUp, unit));
            }
        }
        events
    }

    /// A time between `min` and `max` after `t`, moved past the backlog window if it falls in
    /// one (in the backlog district).
    fn after(&mut self, t: u64, min: u64, max: u64) -> u64 {
        let next = t.saturating_add(self.rng.random_range(min..max));
        let drain: u64 = self.rng.random_range(5_000..150_000);
        if self.backlog && self.in_backlog(next) {
            let off = next.saturating_sub(self.start) % INCIDENT_PERIOD_MS;
            next.saturating_sub(off).saturating_add(BACKLOG.1 + drain)
        } else {
            next
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use citybrain_model::decode::{
        decode_farm_reading, decode_mine_reading, decode_registry, decode_report,
    };
    use citybrain_model::{Reading, ReportEvent};
    use rustc_hash::FxHashSet;

    /// 2025-11-29T08:00:00+08:00.
    const START: u64 = 1_764_374_400_000;
    const S: u64 = 1000;

    fn config(scale: Scale) -> SimulatorConfig {
        SimulatorConfig {
            seed: 7,
            start_ms: START,
            scale,
        }
    }

    fn run(scale: Scale, seconds: u64) -> Vec<SimMessage> {
        let mut sim = Simulator::new(config(scale));
        let mut out = Vec::new();
        sim.advance(START + seconds * S, &mut out);
        out
    }

    fn readings(messages: &[SimMessage]) -> Vec<Reading> {
        messages
            .iter()
            .filter_map(|m| match m.stream {
                SimStream::Mine => decode_mine_reading(&m.payload).ok(),
                SimStream::Farm => decode_farm_reading(&m.payload).ok(),
                _ => None,
            })
            .collect()
    }

    fn reports(messages: &[SimMessage]) -> Vec<ReportEvent> {
        messages
            .iter()
            .filter(|m| m.stream == SimStream::Citizen)
            .filter_map(|m| decode_report(&m.payload).ok())
            .collect()
    }

    fn rel(time: u64) -> u64 {
        time - START
    }

    #[test]
    fn same_seed_same_bytes_and_other_seed_other_bytes() {
        for scale in [Scale::Small, Scale::Demo] {
            assert_eq!(run(scale, 120), run(scale, 120));
            assert_eq!(
                Simulator::new(config(scale)).registry(),
                Simulator::new(config(scale)).registry()
            );
        }
        let mut other = Simulator::new(SimulatorConfig {
            seed: 8,
            ..config(Scale::Small)
        });
        let mut out = Vec::new();
        other.advance(START + 120 * S, &mut out);
        assert_ne!(out, run(Scale::Small, 120));
    }

    #[test]
    fn chunking_does_not_change_the_output() {
        let whole = run(Scale::Small, 1000);
        let mut sim = Simulator::new(config(Scale::Small));
        let mut chunked = Vec::new();
        let mut to = START;
        let steps = [1, 137, 999, 1000, 4321, 60_000, 250];
        let mut i = 0;
        while to < START + 1000 * S {
            to = (to + steps[i % steps.len()]).min(START + 1000 * S);
            sim.advance(to, &mut chunked);
            i += 1;
        }
        assert_eq!(whole.len(), chunked.len());
        assert!(whole == chunked);
    }

    #[test]
    fn every_message_and_registry_record_decodes() {
        for scale in [Scale::Small, Scale::Demo] {
            let sim = Simulator::new(config(scale));
            let mut sensors = FxHashSet::default();
            let mut devices = FxHashSet::default();
            let mut grids = FxHashSet::default();
            for m in sim.registry() {
                let kind = m.stream.registry_kind();
                assert!(kind.is_some(), "{:?} in the registry", m.stream);
                let Some(kind) = kind else { continue };
                let update = decode_registry(kind, Some(m.key.as_bytes()), Some(&m.payload));
                assert!(
                    update.as_ref().is_ok_and(|u| u.info.is_some()),
                    "{m:?}: {update:?}"
                );
                let set = match kind {
                    RegistryKind::Sensors => &mut sensors,
                    RegistryKind::Devices => &mut devices,
                    RegistryKind::Grids => &mut grids,
                };
                assert!(
                    set.insert(m.key.clone()),
                    "duplicate registry key {}",
                    m.key
                );
            }
            let messages = run(scale, 200);
            assert!(!messages.is_empty());
            let mut streams = FxHashSet::default();
            for m in &messages {
                streams.insert(m.stream);
                let text = String::from_utf8_lossy(&m.payload).into_owned();
                match m.stream {
                    SimStream::Mine => {
                        let r = decode_mine_reading(&m.payload);
                        assert!(r.is_ok(), "{text}: {r:?}");
                        let Ok(r) = r else { continue };
                        assert_eq!(
                            (r.entity.as_str(), r.time),
                            (m.key.as_str(), m.time),
                            "{text}"
                        );
                        assert!(
                            sensors.contains(r.entity.as_str()),
                            "unregistered sensor in {text}"
                        );
                    }
                    SimStream::Farm => {
                        let r = decode_farm_reading(&m.payload);
                        assert!(r.is_ok(), "{text}: {r:?}");
                        let Ok(r) = r else { continue };
                        assert_eq!(
                            (r.entity.as_str(), r.time),
                            (m.key.as_str(), m.time),
                            "{text}"
                        );
                        assert!(
                            devices.contains(r.entity.as_str()),
                            "unregistered device in {text}"
                        );
                    }
                    SimStream::Citizen => {
                        let r = decode_report(&m.payload);
                        assert!(r.is_ok(), "{text}: {r:?}");
                        let Ok(r) = r else { continue };
                        assert_eq!(
                            (r.report.as_str(), r.time),
                            (m.key.as_str(), m.time),
                            "{text}"
                        );
                        assert!(grids.contains(&r.grid), "unregistered grid in {text}");
                    }
                    other => panic!("{other:?} from advance()"),
                }
            }
            assert_eq!(streams.len(), 3, "{scale:?}: {streams:?}");
        }
    }

    #[test]
    fn output_is_sorted_and_inside_the_window() {
        let mut sim = Simulator::new(config(Scale::Demo));
        let mut out = vec![SimMessage {
            stream: SimStream::Grids,
            key: "kept".into(),
            payload: Vec::new(),
            time: 0,
        }];
        let mut from = START;
        for to in [
            START,
            START + 333,
            START + 5 * S,
            START + 5 * S,
            START + 61 * S,
            START + 400 * S,
        ] {
            let first = out.len();
            sim.advance(to, &mut out);
            let new = &out[first..];
            assert!(new.iter().all(|m| (from..to.max(from)).contains(&m.time)));
            assert!(new.windows(2).all(|w| w[0].time <= w[1].time));
            from = from.max(to);
            assert_eq!(sim.position(), from);
        }
        assert_eq!(out[0].key, "kept");
        // Going back appends nothing.
        let len = out.len();
        sim.advance(START + 10 * S, &mut out);
        assert_eq!(out.len(), len);
    }

    #[test]
    fn methane_builds_up_on_the_incident_face_and_clears() {
        // Two incident periods, to see that the incident repeats.
        let all = readings(&run(Scale::Small, 1200));
        let prefix = format!("{METHANE_FACE}/ch4-");
        let ch4: Vec<&Reading> = all
            .iter()
            .filter(|r| r.entity.starts_with(&prefix))
            .collect();
        let ids: FxHashSet<&str> = ch4.iter().map(|r| r.entity.as_str()).collect();
        assert_eq!(ids.len(), 5);
        for cycle in [0, INCIDENT_PERIOD_MS] {
            for id in &ids {
                let mine: Vec<&&Reading> = ch4.iter().filter(|r| r.entity == *id).collect();
                let at = |from: u64, to: u64| {
                    mine.iter()
                        .filter(move |r| (cycle + from..cycle + to).contains(&rel(r.time)))
                };
                assert!(
                    at(0, 10 * S).all(|r| r.value < 0.5),
                    "{id} high before the incident"
                );
                assert!(
                    at(0, 30 * S).any(|r| r.value >= 1.0),
                    "{id} never reached 1.0% by +30 s"
                );
                assert!(
                    at(25 * S, 85 * S).all(|r| r.value >= 1.0),
                    "{id} dropped during the incident"
                );
                assert!(
                    at(105 * S, 300 * S).all(|r| r.value < 0.5),
                    "{id} did not clear"
                );
                assert!(at(105 * S, 300 * S).count() > 100);
            }
        }
        // The other face is unaffected, and normal methane stays within 0.1-0.5%.
        let other: Vec<&Reading> = all
            .iter()
            .filter(|r| r.metric == Metric::Ch4 && !r.entity.starts_with(&prefix))
            .collect();
        assert!(!other.is_empty());
        assert!(other.iter().all(|r| (0.03..0.5).contains(&r.value)));
    }

    #[test]
    fn the_silent_sensor_is_silent_then_resumes() {
        let all = run(Scale::Small, 1200);
        let times: Vec<u64> = all
            .iter()
            .filter(|m| m.key == SILENT_SENSOR)
            .map(|m| rel(m.time))
            .collect();
        for cycle in [0, INCIDENT_PERIOD_MS] {
            assert!(
                !times
                    .iter()
                    .any(|t| (cycle + SILENCE.0..cycle + SILENCE.1).contains(t))
            );
            assert!(
                times
                    .iter()
                    .any(|t| (cycle + SILENCE.0 - 2 * S..cycle + SILENCE.0).contains(t))
            );
            assert!(
                times
                    .iter()
                    .any(|t| (cycle + SILENCE.1..cycle + SILENCE.1 + 2 * S).contains(t))
            );
        }
    }

    #[test]
    fn the_greenhouse_dries_out_until_irrigation() {
        let id = format!("{DRY_GREENHOUSE}/soil-water");
        let water: Vec<(u64, f64)> = readings(&run(Scale::Small, 600))
            .into_iter()
            .filter(|r| r.entity == id)
            .map(|r| (rel(r.time), r.value))
            .collect();
        assert!(
            water
                .iter()
                .filter(|(t, _)| *t < DRYING.0)
                .all(|(_, v)| *v > 25.0),
            "{water:?}"
        );
        let dry: Vec<f64> = water
            .iter()
            .filter(|(t, _)| (DRYING.1..IRRIGATION.0).contains(t))
            .map(|(_, v)| *v)
            .collect();
        assert!(
            dry.len() > 15 && dry.iter().all(|v| (11.0..13.0).contains(v)),
            "{water:?}"
        );
        assert!(
            water
                .iter()
                .filter(|(t, _)| (IRRIGATION.1..IRRIGATION.1 + 60 * S).contains(t))
                .all(|(_, v)| *v > 30.0),
            "{water:?}"
        );
        assert!(
            water
                .iter()
                .filter(|(t, _)| *t >= IRRIGATION.1)
                .all(|(_, v)| (20.0..36.0).contains(v)),
            "{water:?}"
        );
        // Other greenhouses stay in their normal band.
        let normal = readings(&run(Scale::Demo, 600));
        assert!(
            normal
                .iter()
                .filter(|r| r.metric == Metric::SoilWater && !r.entity.starts_with(DRY_GREENHOUSE))
                .all(|r| (19.0..36.0).contains(&r.value))
        );
    }

    #[test]
    fn the_sheep_has_a_fever() {
        let all = readings(&run(Scale::Small, 900));
        let fever_id = format!("{FEVER_COLLAR}/body-temp");
        let body: Vec<&Reading> = all
            .iter()
            .filter(|r| r.metric == Metric::BodyTemp)
            .collect();
        assert!(
            body.iter()
                .filter(
                    |r| r.entity == fever_id && (FEVER_RISE.1..FEVER_FALL.0).contains(&rel(r.time))
                )
                .all(|r| r.value > 40.5)
        );
        assert!(
            body.iter()
                .filter(|r| r.entity != fever_id
                    || rel(r.time) < FEVER_RISE.0
                    || rel(r.time) >= FEVER_FALL.1)
                .all(|r| (39.0..=39.8).contains(&r.value))
        );
    }

    #[test]
    fn the_backlog_district_holds_its_reports() {
        let events = reports(&run(Scale::Small, 1200));
        let district = format!("{BACKLOG_DISTRICT}/");
        let in_window = |t: u64| (BACKLOG.0..BACKLOG.1).contains(&(rel(t) % INCIDENT_PERIOD_MS));
        let held: Vec<&ReportEvent> = events
            .iter()
            .filter(|e| {
                e.grid.starts_with(&district) && e.kind != ReportKind::Created && in_window(e.time)
            })
            .collect();
        assert!(held.is_empty(), "{held:?}");
        let created = |from: u64, to: u64, d: &str| {
            events
                .iter()
                .filter(|e| {
                    e.kind == ReportKind::Created
                        && e.grid.starts_with(d)
                        && (from..to).contains(&rel(e.time))
                })
                .count()
        };
        // 4x the rate during the window (per minute: 10 min in the window vs 1 + 4 outside).
        let inside = created(BACKLOG.0, BACKLOG.1, &district);
        let outside =
            created(0, BACKLOG.0, &district) + created(BACKLOG.1, INCIDENT_PERIOD_MS, &district);
        assert!(
            inside as f64 / 10.0 > 2.0 * outside as f64 / 5.0,
            "{inside} vs {outside}"
        );
        // The backlog drains once the window is over.
        assert!(events.iter().any(|e| e.grid.starts_with(&district)
            && e.kind == ReportKind::Dispatched
            && (BACKLOG.1..BACKLOG.1 + 150 * S).contains(&rel(e.time))));
        // Other districts are dispatched as usual.
        assert!(events.iter().any(|e| !e.grid.starts_with(&district)
            && e.kind == ReportKind::Dispatched
            && in_window(e.time)));
    }

    #[test]
    fn report_lifecycles_close_about_85_percent() {
        let def = &SMALL_DISTRICTS[1];
        let grids = vec![(
            "uxin/galutu/village-01".to_string(),
            "uxin/galutu".to_string(),
        )];
        let mut generator = DistrictGen::new(def, grids, 0.001, entity_rng(1, "x"), START);
        let mut resolved = 0;
        let n = 20_000;
        for i in 0..n {
            let created = START + i * 100;
            let plan = generator.plan(created, "uxin/galutu/village-01", "uxin/galutu", "roads");
            assert_eq!(plan.first().map(|e| e.1), Some(ReportKind::Dispatched));
            assert!(plan.first().is_some_and(|e| e.0 > created));
            assert!(plan.windows(2).all(|w| w[0].0 < w[1].0));
            let escalations = plan.iter().filter(|e| e.1 == ReportKind::Escalated).count();
            assert!(escalations <= 2);
            if plan.iter().any(|e| e.1 == ReportKind::Resolved) {
                resolved += 1;
            } else {
                assert_eq!(escalations, 2, "unresolved reports end at district level");
            }
        }
        let rate = resolved as f64 / n as f64;
        assert!((0.83..0.87).contains(&rate), "{rate}");
    }

    #[test]
    fn helpers() {
        assert_eq!(local_date(START), "20251129");
        assert_eq!(local_date(START - 8 * 3_600_000 - 1), "20251128");
        assert_eq!(local_date(951_782_400_000), "20000229");
        assert!((local_hour(START) - 8.0).abs() < 1e-9);
        assert_eq!(offset(90_000), "+1 min 30 s");
        assert_eq!(offset(360_000), "+6 min");
        assert_eq!(offset(45_000), "+45 s");
        let incidents = Simulator::new(config(Scale::Small)).incidents();
        assert_eq!(incidents.len(), 5);
        assert!(
            incidents[0].starts_with(
                "+10 s to +1 min 45 s: methane build-up on working face jungar-1/face-2"
            )
        );
    }
}
