//! Per-connector record counters, for progress displays and tools: records
//! a source task handed to the worker, and records a sink task made durable
//! (acknowledged after its flush).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// One connector's counters.
#[derive(Debug, Default)]
pub struct ConnectorMetrics {
    sourced: AtomicU64,
    sunk: AtomicU64,
}

impl ConnectorMetrics {
    /// Records a source's tasks handed to the worker (offset-only markers
    /// excluded).
    pub fn sourced(&self) -> u64 {
        self.sourced.load(Ordering::Relaxed)
    }

    /// Records a sink's tasks made durable.
    pub fn sunk(&self) -> u64 {
        self.sunk.load(Ordering::Relaxed)
    }

    pub(crate) fn add_sourced(&self, n: u64) {
        self.sourced.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_sunk(&self, n: u64) {
        self.sunk.fetch_add(n, Ordering::Relaxed);
    }
}

fn registry() -> &'static Mutex<BTreeMap<String, Arc<ConnectorMetrics>>> {
    static REGISTRY: OnceLock<Mutex<BTreeMap<String, Arc<ConnectorMetrics>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The counters of connector `name` in this process (created at first use;
/// they survive the connector's restarts).
pub fn connector(name: &str) -> Arc<ConnectorMetrics> {
    let mut map = registry()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::clone(map.entry(name.to_string()).or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_per_connector_and_shared() {
        let a = connector("metrics-test-a");
        a.add_sourced(3);
        connector("metrics-test-a").add_sunk(2);
        assert_eq!((a.sourced(), a.sunk()), (3, 2));
        assert_eq!(connector("metrics-test-b").sourced(), 0);
    }
}
