//! What deleted connectors left in external systems (a PostgreSQL
//! replication slot holding WAL, say): reported when the connector is
//! deleted, then checked again periodically and reported again while it is
//! still there, in the log and in the metrics, until it is removed or a
//! connector of the same name takes it over.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sluice_core::config::Props;
use sluice_core::connector::{ConnectorPlugin, Leftover};

/// How often leftovers are checked when `sluice.summary.interval.ms` is 0.
pub(super) const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(60);

struct Entry {
    plugin: Arc<dyn ConnectorPlugin>,
    props: Props,
    left: Vec<Leftover>,
}

/// Deleted connectors' leftovers, by connector name.
#[derive(Default)]
pub(super) struct Leftovers {
    entries: Arc<Mutex<BTreeMap<String, Entry>>>,
    /// A check is running: the next tick does not start another.
    checking: Arc<AtomicBool>,
}

impl Leftovers {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers what the deleted connector `name` left (nothing to
    /// remember when it left nothing).
    pub(super) fn note(
        &self,
        name: &str,
        plugin: Arc<dyn ConnectorPlugin>,
        props: Props,
        left: Vec<Leftover>,
    ) {
        let mut entries = self.lock();
        if left.is_empty() {
            entries.remove(name);
        } else {
            entries.insert(
                name.to_string(),
                Entry {
                    plugin,
                    props,
                    left,
                },
            );
        }
    }

    /// A connector named `name` exists again: what was left is its own.
    pub(super) fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    /// What is left now, by deleted connector.
    pub(super) fn now(&self) -> Vec<(String, Leftover)> {
        self.lock()
            .iter()
            .flat_map(|(n, e)| e.left.iter().map(move |l| (n.clone(), l.clone())))
            .collect()
    }

    /// Checks every leftover again in the background, logging what is
    /// still there and what is gone.
    pub(super) fn check(&self) {
        let todo: Vec<(String, Arc<dyn ConnectorPlugin>, Props)> = self
            .lock()
            .iter()
            .map(|(n, e)| (n.clone(), Arc::clone(&e.plugin), e.props.clone()))
            .collect();
        if todo.is_empty() || self.checking.swap(true, Ordering::AcqRel) {
            return;
        }
        let entries = Arc::clone(&self.entries);
        let checking = Arc::clone(&self.checking);
        tokio::spawn(async move {
            for (name, plugin, props) in todo {
                let left = plugin.left_behind(&props).await;
                let mut all = entries.lock().unwrap_or_else(PoisonError::into_inner);
                // Forgotten meanwhile (created again): not ours to report.
                let Some(entry) = all.get_mut(&name) else {
                    continue;
                };
                if left.is_empty() {
                    tracing::info!(connector = %name, "what the deleted connector left behind is gone");
                    all.remove(&name);
                    continue;
                }
                for l in &left {
                    tracing::warn!(connector = %name, "still left by the deleted connector: {}", l.note);
                }
                entry.left = left;
            }
            checking.store(false, Ordering::Release);
        });
    }
}
