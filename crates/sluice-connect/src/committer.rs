//! The offset committer: gathers the offsets whose records every sink task
//! made durable, writes them to the offset file, and only once the file is
//! durable tells each source task through its `committed` channel — a source
//! may release upstream data (confirm an LSN) when it hears, so the file must
//! never lag behind what a source was told.

use std::sync::Arc;

use sluice_core::record::SourceOffset;
use tokio::sync::watch;

use crate::delivery::DeliveryTracker;
use crate::distributed::InternalTopics;
use crate::offset_file::{OffsetFileError, OffsetStore};

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
    /// The task writes its offsets itself, in the transactions of its
    /// records (exactly-once mode): they are only announced.
    stored_by_task: bool,
}

impl CommitSource {
    /// A committer entry for a source task.
    pub fn new(
        connector: String,
        task_id: u32,
        tracker: Arc<DeliveryTracker>,
        committed: watch::Sender<Option<Arc<SourceOffset>>>,
    ) -> Self {
        CommitSource {
            connector,
            task_id,
            tracker,
            committed,
            unannounced: None,
            stored_by_task: false,
        }
    }

    /// Marks the task as writing its offsets in its own transactions.
    pub fn stored_by_task(mut self) -> Self {
        self.stored_by_task = true;
        self
    }
}

/// Commits source offsets to one offset store.
pub struct Committer {
    store: OffsetStore,
    sources: Vec<CommitSource>,
    dirty: bool,
    /// Distributed mode: offsets go to the offsets topic, not a file.
    topics: Option<Arc<InternalTopics>>,
}

impl Committer {
    /// A committer over `store` for `sources`.
    pub fn new(store: OffsetStore, sources: Vec<CommitSource>) -> Self {
        Committer {
            store,
            sources,
            dirty: false,
            topics: None,
        }
    }

    /// A committer writing to the offsets topic of `topics`; `store` holds
    /// what the topic holds.
    pub fn over_topic(store: OffsetStore, topics: Arc<InternalTopics>) -> Self {
        Committer {
            store,
            sources: Vec::new(),
            dirty: false,
            topics: Some(topics),
        }
    }

    /// Reads what other workers wrote to the offsets topic (before a source
    /// task starts from it); nothing for a file store.
    pub async fn refresh(&mut self) -> Result<(), OffsetFileError> {
        let Some(topics) = self.topics.clone() else {
            return Ok(());
        };
        // Our own unwritten changes go first, so reading cannot undo them.
        self.commit().await?;
        topics
            .refresh_offsets(&mut self.store)
            .await
            .map_err(|e| OffsetFileError::Topic {
                topic: topics.config.offset_topic.clone(),
                message: format!("{e:#}"),
            })
    }

    /// Adds a source task started at runtime.
    pub fn add_source(&mut self, source: CommitSource) {
        self.sources.push(source);
    }

    /// Forgets the source tasks of `connector` (stopped or deleted); its
    /// stored offsets stay, as Kafka Connect keeps a deleted connector's.
    pub fn remove_connector(&mut self, connector: &str) {
        self.sources.retain(|s| s.connector != connector);
    }

    /// Every source task's delivery tracker.
    pub fn trackers(&self) -> impl Iterator<Item = &Arc<DeliveryTracker>> {
        self.sources.iter().map(|s| &s.tracker)
    }

    /// The offset store (what was committed so far).
    pub fn store(&self) -> &OffsetStore {
        &self.store
    }

    /// Changes the stored offsets (the REST API's offset endpoints) and
    /// commits, so the change is durable when this returns Ok.
    pub async fn alter(
        &mut self,
        change: impl FnOnce(&mut OffsetStore),
    ) -> Result<(), OffsetFileError> {
        change(&mut self.store);
        self.dirty = true;
        self.commit().await
    }

    /// Commits whatever became delivered since the last commit.
    pub async fn commit(&mut self) -> Result<(), OffsetFileError> {
        for s in &mut self.sources {
            for o in s.tracker.take_committable() {
                if s.stored_by_task {
                    self.store.set_stored(&s.connector, &o.partition, &o.offset);
                } else {
                    self.store.set(&s.connector, &o.partition, &o.offset);
                    self.dirty = true;
                }
                s.unannounced = Some(o);
            }
        }
        if let Some(topics) = self.topics.clone() {
            let changes = self.store.take_changes();
            if !changes.is_empty() {
                let records = changes
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_ref().map(|o| {
                                serde_json::Value::Object(o.clone())
                                    .to_string()
                                    .into_bytes()
                            }),
                        )
                    })
                    .collect();
                if let Err(e) = topics.write(&topics.config.offset_topic, records).await {
                    self.store.restore_changes(changes);
                    return Err(OffsetFileError::Topic {
                        topic: topics.config.offset_topic.clone(),
                        message: format!("{e:#}"),
                    });
                }
                tracing::debug!(topic = %topics.config.offset_topic, "committed source offsets");
            }
            self.dirty = false;
        }
        if self.dirty {
            let snapshot = self.store.clone();
            // The write fsyncs: keep it off the async worker threads.
            let saved = tokio::task::spawn_blocking(move || snapshot.save())
                .await
                .map_err(|e| OffsetFileError::Io {
                    path: self.store.path().display().to_string(),
                    action: "writing (writer thread failed)",
                    source: std::io::Error::other(e),
                })?;
            saved?;
            self.dirty = false;
            tracing::debug!(file = %self.store.path().display(), "committed source offsets");
        }
        for s in &mut self.sources {
            if let Some(o) = s.unannounced.take() {
                tracing::trace!(connector = %s.connector, task = s.task_id, offset = ?o.offset, "offset committed");
                s.committed.send_replace(Some(o));
            }
        }
        Ok(())
    }
}
