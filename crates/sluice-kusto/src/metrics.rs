//! Per-connector counters of the Kusto sink: batches ingested, their
//! records and raw bytes, and batches given up on.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

/// Counters of one connector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Batches ADX accepted.
    pub batches: u64,
    /// Records in them.
    pub records: u64,
    /// Their uncompressed bytes.
    pub bytes: u64,
    /// Batches given up on (`behavior.on.error` log or ignore).
    pub failed_batches: u64,
}

fn all() -> &'static Mutex<HashMap<String, Counts>> {
    static ALL: OnceLock<Mutex<HashMap<String, Counts>>> = OnceLock::new();
    ALL.get_or_init(Default::default)
}

fn with(connector: &str, f: impl FnOnce(&mut Counts)) {
    let mut all = all().lock().unwrap_or_else(PoisonError::into_inner);
    f(all.entry(connector.to_string()).or_default());
}

/// A batch was accepted.
pub fn note_batch(connector: &str, records: u64, bytes: u64) {
    with(connector, |c| {
        c.batches += 1;
        c.records += records;
        c.bytes += bytes;
    });
}

/// A batch was given up on.
pub fn note_failed_batch(connector: &str) {
    with(connector, |c| c.failed_batches += 1);
}

/// The counters of `connector`.
pub fn counts(connector: &str) -> Counts {
    all()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(connector)
        .copied()
        .unwrap_or_default()
}
