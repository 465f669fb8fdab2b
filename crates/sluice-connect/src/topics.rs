//! Kafka Connect's active topics: per connector, the topics a source wrote
//! to or a sink read from since the connector was created or its topics
//! were last reset (`GET /connectors/{c}/topics`).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

/// The active topics of every connector of a worker.
#[derive(Debug, Default)]
pub struct ActiveTopics {
    by_connector: Mutex<HashMap<String, BTreeSet<Arc<str>>>>,
}

impl ActiveTopics {
    /// Notes that `connector` used `topic`.
    pub fn note(&self, connector: &str, topic: &Arc<str>) {
        let mut map = self
            .by_connector
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(connector) {
            Some(set) => {
                if !set.contains(topic) {
                    set.insert(Arc::clone(topic));
                }
            }
            None => {
                map.insert(connector.to_string(), BTreeSet::from([Arc::clone(topic)]));
            }
        }
    }

    /// The topics `connector` used, sorted.
    pub fn of(&self, connector: &str) -> Vec<String> {
        self.by_connector
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(connector)
            .map(|set| set.iter().map(|t| t.to_string()).collect())
            .unwrap_or_default()
    }

    /// Forgets the topics `connector` used.
    pub fn reset(&self, connector: &str) {
        self.by_connector
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(connector);
    }
}
