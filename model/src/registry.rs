//! Reference data: what a sensor, device or grid is, from compacted Kafka topics
//! (key = id, latest value wins, an empty value is a tombstone that deletes the id).

use serde::{Deserialize, Serialize};

use crate::EntityId;
use crate::reading::{Domain, Metric};

/// Sorted `(name, value)` pairs describing an entity (e.g. `mine`, `face`, `kind`). Sorted so
/// the same labels always compare and hash equal.
pub type Labels = Vec<(String, String)>;

/// Which compacted registry a record comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryKind {
    /// Mine sensors: sensor id -> mine, working face, kind, cadence.
    Sensors,
    /// Farm devices: device id -> farm, greenhouse or herd, kind, cadence.
    Devices,
    /// Citizen grids: grid id -> village, town, district.
    Grids,
}

impl RegistryKind {
    /// The domain whose entities this registry describes.
    pub fn domain(self) -> Domain {
        match self {
            RegistryKind::Sensors => Domain::Mine,
            RegistryKind::Devices => Domain::Farm,
            RegistryKind::Grids => Domain::Citizen,
        }
    }
}

/// Wire value of the `registry.sensors` topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorRecord {
    /// Sensor id; optional because the Kafka key carries it (the key wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensor: Option<String>,
    /// Mine id.
    pub mine: String,
    /// Working face id (unique within the city, e.g. `dalad-1/face-3`).
    pub face: String,
    /// The metric this sensor measures.
    pub kind: Metric,
    /// Expected interval between readings, milliseconds.
    pub cadence_ms: u64,
}

/// Wire value of the `registry.devices` topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRecord {
    /// Device id; optional because the Kafka key carries it (the key wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Farm or ranch id.
    pub farm: String,
    /// Greenhouse id, for climate and substrate devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greenhouse: Option<String>,
    /// Herd id, for livestock collars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub herd: Option<String>,
    /// Animal id, for livestock collars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub animal: Option<String>,
    /// The metric this device measures.
    pub kind: Metric,
    /// Expected interval between readings, milliseconds.
    pub cadence_ms: u64,
}

/// Wire value of the `registry.grids` topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridRecord {
    /// Grid id; optional because the Kafka key carries it (the key wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<String>,
    /// Village or community.
    pub village: String,
    /// Town (sumu/township/street office).
    pub town: String,
    /// District or banner.
    pub district: String,
}

/// What the engine keeps about one registered entity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntityInfo {
    /// Labels rules select on and alerts carry (`mine`, `face`, `kind`, ...).
    pub labels: Labels,
    /// Expected interval between readings, milliseconds (0 for grids).
    pub cadence_ms: u64,
}

impl EntityInfo {
    /// Builds info from unsorted labels, dropping absent ones.
    pub fn new(
        labels: impl IntoIterator<Item = (&'static str, Option<String>)>,
        cadence_ms: u64,
    ) -> Self {
        let mut labels: Labels = labels
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect();
        labels.sort();
        EntityInfo { labels, cadence_ms }
    }

    /// The value of one label.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl From<SensorRecord> for EntityInfo {
    fn from(r: SensorRecord) -> Self {
        EntityInfo::new(
            [
                ("mine", Some(r.mine)),
                ("face", Some(r.face)),
                ("kind", Some(r.kind.as_str().to_string())),
            ],
            r.cadence_ms,
        )
    }
}

impl From<DeviceRecord> for EntityInfo {
    fn from(r: DeviceRecord) -> Self {
        EntityInfo::new(
            [
                ("farm", Some(r.farm)),
                ("greenhouse", r.greenhouse),
                ("herd", r.herd),
                ("animal", r.animal),
                ("kind", Some(r.kind.as_str().to_string())),
            ],
            r.cadence_ms,
        )
    }
}

impl From<GridRecord> for EntityInfo {
    fn from(r: GridRecord) -> Self {
        EntityInfo::new(
            [
                ("village", Some(r.village)),
                ("town", Some(r.town)),
                ("district", Some(r.district)),
            ],
            0,
        )
    }
}

/// One decoded registry message: `info = None` is a tombstone (delete `key`).
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryUpdate {
    /// Which registry.
    pub kind: RegistryKind,
    /// Entity id (the Kafka key).
    pub key: EntityId,
    /// The new value, or `None` to delete.
    pub info: Option<EntityInfo>,
}
