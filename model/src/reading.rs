//! Sensor readings of the mine and farm domains, and their metrics.

use serde::{Deserialize, Serialize};

use crate::EntityId;
use crate::time::EventTime;

/// The domain an event or rule belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    /// Coal-mine gas and ventilation sensors.
    Mine,
    /// Greenhouse climate, substrate and livestock collars.
    Farm,
    /// Citizen reports.
    Citizen,
}

impl Domain {
    /// The lowercase name used on the wire, in config and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Mine => "mine",
            Domain::Farm => "farm",
            Domain::Citizen => "citizen",
        }
    }
}

/// A measured quantity. Units are fixed per metric (see each variant).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Methane, % CH4 by volume (mine).
    Ch4,
    /// Carbon monoxide, ppm (mine).
    Co,
    /// Air velocity, m/s (mine).
    AirVelocity,
    /// Airflow, m3/min (mine).
    Airflow,
    /// Temperature, degrees C (mine).
    Temperature,
    /// Seismic energy released in a shift, joules (mine; rock-burst hazard).
    SeismicEnergy,
    /// Seismic bumps registered in a shift, count (mine).
    SeismicBumps,
    /// Greenhouse air temperature, degrees C (farm).
    AirTemp,
    /// Relative humidity, % (farm).
    Humidity,
    /// Substrate volumetric water content, % (farm).
    SoilWater,
    /// Substrate temperature, degrees C (farm).
    SoilTemp,
    /// Animal body temperature, degrees C (farm).
    BodyTemp,
    /// Animal activity, collar motion index per minute (farm).
    Activity,
}

impl Metric {
    /// Every metric, in declaration order.
    pub const ALL: [Metric; 13] = [
        Metric::Ch4,
        Metric::Co,
        Metric::AirVelocity,
        Metric::Airflow,
        Metric::Temperature,
        Metric::SeismicEnergy,
        Metric::SeismicBumps,
        Metric::AirTemp,
        Metric::Humidity,
        Metric::SoilWater,
        Metric::SoilTemp,
        Metric::BodyTemp,
        Metric::Activity,
    ];

    /// The domain whose readings carry this metric.
    pub fn domain(self) -> Domain {
        match self {
            Metric::Ch4
            | Metric::Co
            | Metric::AirVelocity
            | Metric::Airflow
            | Metric::Temperature
            | Metric::SeismicEnergy
            | Metric::SeismicBumps => Domain::Mine,
            _ => Domain::Farm,
        }
    }

    /// The snake_case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Ch4 => "ch4",
            Metric::Co => "co",
            Metric::AirVelocity => "air_velocity",
            Metric::Airflow => "airflow",
            Metric::Temperature => "temperature",
            Metric::SeismicEnergy => "seismic_energy",
            Metric::SeismicBumps => "seismic_bumps",
            Metric::AirTemp => "air_temp",
            Metric::Humidity => "humidity",
            Metric::SoilWater => "soil_water",
            Metric::SoilTemp => "soil_temp",
            Metric::BodyTemp => "body_temp",
            Metric::Activity => "activity",
        }
    }

    /// The unit values of this metric are in.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::Ch4 => "%",
            Metric::Co => "ppm",
            Metric::AirVelocity => "m/s",
            Metric::Airflow => "m3/min",
            Metric::Temperature | Metric::AirTemp | Metric::SoilTemp | Metric::BodyTemp => "C",
            Metric::Humidity | Metric::SoilWater => "%",
            Metric::Activity => "index/min",
            Metric::SeismicEnergy => "J",
            Metric::SeismicBumps => "count",
        }
    }

    /// Looks a metric up by wire name within a domain.
    pub fn parse(name: &str, domain: Domain) -> Option<Metric> {
        Metric::ALL
            .into_iter()
            .find(|m| m.as_str() == name && m.domain() == domain)
    }
}

/// One decoded sensor reading, mine or farm, in the engine's internal form.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    /// Mine or farm.
    pub domain: Domain,
    /// Sensor id (mine) or device id (farm).
    pub entity: EntityId,
    /// What was measured.
    pub metric: Metric,
    /// The measured value in the metric's unit; always finite.
    pub value: f64,
    /// When it was measured.
    pub time: EventTime,
}
