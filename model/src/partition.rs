//! Where readings come from: a Kafka partition of a reading topic, named so that an alert
//! about it (`ingest stalled`) has an entity such as `mine.readings/2`.

use serde::{Deserialize, Serialize};

use crate::reading::Domain;

/// A partition of a reading topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionId {
    /// The domain of the readings the topic carries.
    pub domain: Domain,
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

impl PartitionId {
    /// The partition as an alert entity: `topic/partition`, e.g. `mine.readings/2`.
    pub fn entity(&self) -> String {
        format!("{}/{}", self.topic, self.partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entity_names_topic_and_partition() {
        let p = PartitionId {
            domain: Domain::Mine,
            topic: "mine.readings".into(),
            partition: 2,
        };
        assert_eq!(p.entity(), "mine.readings/2");
    }
}
