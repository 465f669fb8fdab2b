//! The offset committer: gathers the offsets whose records the transport
//! stored durably, writes them to the offset store, and only once they are
//! durable tells each source task through its `committed` channel — a
//! source may release upstream data (confirm an LSN) when it hears, so the
//! store must never lag behind what a source was told.

use std::sync::Arc;

use sluice_core::record::SourceOffset;
use sluice_core::telemetry::{now_us, SourceTelemetry};
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::watch;

use crate::delivery::DeliveryTracker;
use crate::offsets::{OffsetStore, OffsetStoreError, OffsetTable, OffsetWrite};

/// One source task as the committer sees it.
pub struct CommitSource {
    /// Connector name (the offset entry's first key element).
    pub connector: String,
    /// Task number (for logs).
    pub task_id: u32,
    /// The task's delivery state.
    pub tracker: Arc<DeliveryTracker>,
    /// Where the task hears about committed offsets.
    pub committed: watch::Sender<Option<Arc<SourceOffset>>>,
    /// Written to the store but not yet durable, or durable but not yet
    /// announced (a failed write is retried at the next commit).
    unannounced: Option<Arc<SourceOffset>>,
    /// The transport writes the task's offsets itself, in the
    /// transactions of its records (exactly-once mode): they are only
    /// announced.
    stored_by_transport: bool,
    /// Where its offset commits are counted.
    telemetry: Option<Arc<SourceTelemetry>>,
}

impl CommitSource {
    /// Counts the task's offset commits in `telemetry`.
    pub fn with_telemetry(mut self, telemetry: Arc<SourceTelemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// A committer entry for a source task.
    pub fn new(
        connector: String,
        task_id: u32,
        tracker: Arc<DeliveryTracker>,
        committed: watch::Sender<Option<Arc<SourceOffset>>>,
        stored_by_transport: bool,
    ) -> Self {
        CommitSource {
            connector,
            task_id,
            tracker,
            committed,
            unannounced: None,
            stored_by_transport,
            telemetry: None,
        }
    }
}

/// Commits source offsets to one offset store.
pub struct Committer {
    store: Box<dyn OffsetStore>,
    sources: Vec<CommitSource>,
    /// Delivered, not yet written (a failed write is retried).
    pending: Vec<OffsetWrite>,
}

impl Committer {
    /// A committer over `store` (loaded).
    pub fn new(store: Box<dyn OffsetStore>) -> Self {
        Committer {
            store,
            sources: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Reads what the store holds now (what other workers wrote to a
    /// shared store), after writing what is pending so reading cannot undo
    /// it.
    pub async fn refresh(&mut self) -> Result<(), OffsetStoreError> {
        self.commit().await?;
        self.store.load().await
    }

    /// Adds a source task.
    pub fn add_source(&mut self, source: CommitSource) {
        self.sources.push(source);
    }

    /// Forgets the source tasks of `connector` (stopped or deleted); its
    /// stored offsets stay, as Kafka Connect keeps a deleted connector's.
    pub fn remove_connector(&mut self, connector: &str) {
        self.sources.retain(|s| s.connector != connector);
    }

    /// Forgets one source task (stopped).
    pub fn remove_source(&mut self, connector: &str, task_id: u32) {
        self.sources
            .retain(|s| s.connector != connector || s.task_id != task_id);
    }

    /// The offsets stored so far.
    pub fn table(&self) -> &OffsetTable {
        self.store.table()
    }

    /// What the store is, for messages.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Changes stored offsets (the REST API's offset endpoints); durable
    /// when this returns Ok.
    pub async fn alter(&mut self, changes: Vec<OffsetWrite>) -> Result<(), OffsetStoreError> {
        self.commit().await?;
        self.store.write(changes).await
    }

    /// Stores one offset at once, outside delivery (see
    /// [`sluice_core::connector::OffsetWriter`]).
    pub async fn store_now(
        &mut self,
        connector: &str,
        offset: &SourceOffset,
    ) -> Result<(), OffsetStoreError> {
        self.alter(vec![OffsetWrite {
            connector: connector.to_string(),
            partition: offset.partition.clone(),
            offset: Some(offset.offset.clone()),
        }])
        .await
    }

    /// Commits whatever became delivered since the last commit.
    pub async fn commit(&mut self) -> Result<(), OffsetStoreError> {
        for s in &mut self.sources {
            for o in s.tracker.take_committable() {
                let w = OffsetWrite {
                    connector: s.connector.clone(),
                    partition: o.partition.clone(),
                    offset: Some(o.offset.clone()),
                };
                if s.stored_by_transport {
                    self.store.note_stored(w);
                } else {
                    // Only the latest per entry is worth writing.
                    self.pending
                        .retain(|p| p.connector != w.connector || p.partition != w.partition);
                    self.pending.push(w);
                }
                s.unannounced = Some(o);
            }
        }
        if !self.pending.is_empty() {
            let changes = std::mem::take(&mut self.pending);
            if let Err(e) = self.store.write(changes.clone()).await {
                for s in &self.sources {
                    if let Some(t) = &s.telemetry {
                        if changes.iter().any(|c| c.connector == s.connector) {
                            t.commit_failures.fetch_add(1, Relaxed);
                        }
                    }
                }
                self.pending = changes;
                return Err(e);
            }
            tracing::debug!(store = %self.store.describe(), "committed source offsets");
        }
        for s in &mut self.sources {
            if let Some(o) = s.unannounced.take() {
                if let Some(t) = &s.telemetry {
                    t.commits.fetch_add(1, Relaxed);
                    t.last_commit_at_us.store(now_us(), Relaxed);
                }
                tracing::trace!(connector = %s.connector, task = s.task_id, offset = ?o.offset, "offset committed");
                s.committed.send_replace(Some(o));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::MemoryOffsetStore;

    #[tokio::test]
    async fn only_delivered_offsets_are_written_and_then_announced() {
        let mut c = Committer::new(Box::new(MemoryOffsetStore::new()));
        let tracker = Arc::new(DeliveryTracker::new());
        let (tx, rx) = watch::channel(None);
        c.add_source(CommitSource::new(
            "pg".into(),
            0,
            Arc::clone(&tracker),
            tx,
            false,
        ));
        let off = |n: i64| {
            let mut o = serde_json::Map::new();
            o.insert("lsn".into(), n.into());
            let mut p = serde_json::Map::new();
            p.insert("server".into(), "s".into());
            Arc::new(SourceOffset {
                partition: p,
                offset: o,
            })
        };
        tracker.dispatch(Some(&off(1)));
        tracker.dispatch(Some(&off(2)));
        c.commit().await.expect("commit");
        assert!(rx.borrow().is_none(), "nothing delivered, nothing told");
        tracker.ack(1);
        c.commit().await.expect("commit");
        assert_eq!(
            rx.borrow().as_ref().map(|o| o.offset["lsn"].clone()),
            Some(1.into())
        );
        assert_eq!(c.table().of("pg")[0].1["lsn"], 1);
    }
}
