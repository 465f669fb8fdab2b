//! Reads a whole topic, outside any consumer group: how a distributed
//! worker loads its config, offsets and status topics at start and then
//! keeps up with what other workers write to them.
//!
//! [`TopicReader::catch_up`] returns every record written since the last
//! call, up to the end of each partition as of the call: a worker that
//! wrote a record and then catches up has read its own write. Consumers read
//! `read_committed` (librdkafka's default), so records of an aborted or
//! open transaction are never returned.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Offset, TopicPartitionList};
use sluice_core::record::Record;

use crate::config::{ClientRole, KafkaConfig};
use crate::consumer::to_record;
use crate::context::{probe, SluiceContext};
use crate::error::{Error, Result};

/// Reads one topic from its beginning, all partitions.
pub struct TopicReader {
    inner: Arc<BaseConsumer<SluiceContext>>,
    topic: String,
    state: Arc<std::sync::Mutex<ReadState>>,
    timeout: Duration,
}

#[derive(Default)]
struct ReadState {
    /// Per partition: the next offset to read.
    next: Vec<i64>,
    topics: HashMap<String, Arc<str>>,
}

impl std::fmt::Debug for TopicReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicReader")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl TopicReader {
    /// Opens `topic` (which must exist) for reading from its beginning.
    pub async fn open(cfg: &KafkaConfig, topic: &str) -> Result<TopicReader> {
        let ctx = SluiceContext::default();
        // librdkafka's assign() wants a group handle; the group is never
        // joined (no subscribe) and nothing is committed to it.
        let group = format!(
            "sluice-reader-{topic}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let inner: BaseConsumer<SluiceContext> = cfg
            .client_config(
                ClientRole::Consumer,
                &[],
                &[
                    ("group.id", group.as_str()),
                    ("enable.auto.commit", "false"),
                    ("enable.auto.offset.store", "false"),
                    ("enable.partition.eof", "false"),
                    ("auto.offset.reset", "earliest"),
                ],
            )
            .create_with_context(ctx.clone())
            .map_err(Error::kafka("consumer creation"))?;
        let inner = Arc::new(inner);
        let (bootstrap, timeout) = (cfg.bootstrap().to_string(), cfg.connect_timeout);
        let (c, t) = (Arc::clone(&inner), topic.to_string());
        let partitions = tokio::task::spawn_blocking(move || -> Result<i32> {
            probe(|d| c.fetch_metadata(Some(&t), d), &ctx, &bootstrap, timeout)?;
            let md = c
                .fetch_metadata(Some(&t), timeout)
                .map_err(Error::kafka("metadata"))?;
            let count = md
                .topics()
                .iter()
                .find(|m| m.name() == t)
                .map_or(0, |m| m.partitions().len() as i32);
            if count == 0 {
                return Err(Error::Topic {
                    topic: t.clone(),
                    message: "does not exist (or has no partitions)".into(),
                });
            }
            let mut tpl = TopicPartitionList::with_capacity(count as usize);
            for p in 0..count {
                tpl.add_partition_offset(&t, p, Offset::Beginning)
                    .map_err(Error::kafka("assign"))?;
            }
            c.assign(&tpl).map_err(Error::kafka("assign"))?;
            Ok(count)
        })
        .await
        .map_err(|_| Error::Closed("open"))??;
        Ok(TopicReader {
            inner,
            topic: topic.to_string(),
            state: Arc::new(std::sync::Mutex::new(ReadState {
                next: vec![0; partitions as usize],
                topics: HashMap::new(),
            })),
            timeout,
        })
    }

    /// The topic read.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Every record not returned before, up to the end of each partition as
    /// of this call, in order per partition.
    pub async fn catch_up(&self) -> Result<Vec<Record>> {
        let (c, topic, state, timeout) = (
            Arc::clone(&self.inner),
            self.topic.clone(),
            Arc::clone(&self.state),
            self.timeout,
        );
        tokio::task::spawn_blocking(move || {
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            read_to_end(&c, &topic, &mut st, timeout)
        })
        .await
        .map_err(|_| Error::Closed("catch up"))?
    }
}

fn read_to_end(
    c: &BaseConsumer<SluiceContext>,
    topic: &str,
    st: &mut ReadState,
    timeout: Duration,
) -> Result<Vec<Record>> {
    let start = Instant::now();
    let partitions = st.next.len();
    // One ListOffsets request for every partition's end (timestamp -1:
    // the latest offset).
    let mut ends = TopicPartitionList::with_capacity(partitions);
    for p in 0..partitions {
        ends.add_partition_offset(topic, p as i32, Offset::End)
            .map_err(Error::kafka("reading partition ends"))?;
    }
    let ends = c
        .offsets_for_times(ends, timeout)
        .map_err(Error::kafka("reading partition ends"))?;
    // Every partition's end must be known: reading "to the end" of a
    // partition whose end was not answered would stop at once and make a
    // topic look emptier than it is (offsets that "look empty" make a
    // source start over).
    let mut high: Vec<Option<i64>> = vec![None; partitions];
    for e in ends.elements_for_topic(topic) {
        if let (Ok(p), Offset::Offset(o)) = (usize::try_from(e.partition()), e.offset()) {
            if p < partitions {
                high[p] = Some(o);
            }
        }
    }
    let high: Vec<i64> = match high.iter().position(Option::is_none) {
        Some(p) => {
            return Err(Error::Topic {
                topic: topic.to_string(),
                message: format!(
                    "the broker did not say where partition {p} ends; not reading a part of it as if it were all"
                ),
            })
        }
        None => high.into_iter().flatten().collect(),
    };
    let mut out = Vec::new();
    loop {
        // librdkafka's position steps over transaction markers and aborted
        // records, which no returned record does.
        if let Ok(pos) = c.position() {
            for e in pos.elements_for_topic(topic) {
                if let (Offset::Offset(o), Ok(p)) = (e.offset(), usize::try_from(e.partition())) {
                    if p < partitions && o > st.next[p] {
                        st.next[p] = o;
                    }
                }
            }
        }
        if (0..partitions).all(|p| st.next[p] >= high[p]) {
            return Ok(out);
        }
        if start.elapsed() > timeout {
            return Err(Error::Topic {
                topic: topic.to_string(),
                message: format!(
                    "could not read to the end within {} ms",
                    timeout.as_millis()
                ),
            });
        }
        match c.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let r = to_record(&m, &mut st.topics);
                if let Some(p) = usize::try_from(r.partition)
                    .ok()
                    .filter(|p| *p < partitions)
                {
                    st.next[p] = st.next[p].max(r.offset + 1);
                }
                out.push(r);
            }
            Some(Err(e)) => {
                return Err(Error::Topic {
                    topic: topic.to_string(),
                    message: format!("reading: {e}"),
                })
            }
        }
    }
}
