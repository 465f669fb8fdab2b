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

/// Sub-buckets per power of two of [`LatencyHistogram`]: a recorded value
/// is off by at most 1/32 (about 3%) of itself.
const SUB_BUCKETS: usize = 32;
/// Powers of two covered above the exact range: values below 2^45 µs (about
/// a year) are kept apart; larger ones count in the last bucket.
const POWERS: usize = 40;

/// Latencies in microseconds, in log-linear buckets: constant memory
/// (10 KiB) whatever the number of samples, so measuring latency does not
/// change the memory it is measured against.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: vec![0; SUB_BUCKETS * (POWERS + 1)],
            total: 0,
            max_us: 0,
        }
    }
}

/// p50, p99 and maximum of a [`LatencyHistogram`], in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample (exact).
    pub max_ms: f64,
}

impl std::fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "samples={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
            self.count, self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

fn bucket_of(us: u64) -> usize {
    if us < SUB_BUCKETS as u64 {
        return us as usize;
    }
    // Below 2^5 every value has its own bucket; above, 32 buckets per power.
    let power = (63 - us.leading_zeros()) as usize; // >= 5
    let shift = power - 5;
    let sub = ((us >> shift) as usize) - SUB_BUCKETS;
    (SUB_BUCKETS * (power - 4) + sub).min(SUB_BUCKETS * (POWERS + 1) - 1)
}

/// The largest value that lands in `bucket` (the bucket's upper bound), so a
/// percentile never understates latency.
fn upper_bound_of(bucket: usize) -> u64 {
    if bucket < SUB_BUCKETS {
        return bucket as u64;
    }
    let power = bucket / SUB_BUCKETS + 4;
    let sub = (bucket % SUB_BUCKETS + SUB_BUCKETS) as u64;
    let shift = power - 5;
    ((sub + 1) << shift) - 1
}

impl LatencyHistogram {
    /// Adds one sample; negative latencies (clocks of another host that run
    /// ahead) count as zero.
    pub fn record_us(&mut self, us: i64) {
        let us = u64::try_from(us).unwrap_or(0);
        self.counts[bucket_of(us)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The smallest bucket bound that at least `q` of the samples are at or
    /// below (capped by the exact maximum); 0 without samples.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper_bound_of(bucket).min(self.max_us);
            }
        }
        self.max_us
    }

    /// p50, p99 and max in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: self.total,
            p50_ms: ms(self.quantile_us(0.5)),
            p99_ms: ms(self.quantile_us(0.99)),
            max_ms: ms(self.max_us),
        }
    }
}

/// The PostgreSQL commit time (µs since the epoch) of a Debezium change
/// event, or None for a snapshot read or anything else: the envelope's
/// `source.ts_us` (Debezium 2.x), else `source.ts_ms`, when
/// `source.snapshot` is "false" (or null, standing for its default
/// "false").
pub fn event_commit_time_us(
    schema: Option<&sluice_core::schema::Schema>,
    value: &sluice_core::value::Value,
) -> Option<i64> {
    use sluice_core::value::Value;
    let schema = schema?;
    let (i, source_field) = schema.field("source")?;
    let source = value.as_struct()?.get(i)?.as_struct()?;
    let field = |name: &str| {
        source_field
            .schema
            .field(name)
            .and_then(|(j, _)| source.get(j))
    };
    match field("snapshot")? {
        Value::Null => {}
        Value::String(s) if s == "false" => {}
        _ => return None,
    }
    field("ts_us").and_then(Value::as_i64).or_else(|| {
        field("ts_ms")
            .and_then(Value::as_i64)
            .map(|ms| ms.saturating_mul(1000))
    })
}

/// Microseconds since the Unix epoch by the system clock (0 if the clock is
/// before 1970).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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
    #[test]
    fn histogram_buckets_bound_values_within_three_percent() {
        for us in [0u64, 1, 31, 32, 33, 63, 64, 1000, 12_345, 999_999, 1 << 39] {
            let b = bucket_of(us);
            let hi = upper_bound_of(b);
            assert!(hi >= us, "{us} above its bucket's bound {hi}");
            assert!(hi - us <= us / 32, "{us} in a bucket up to {hi}");
            if b > 0 {
                assert!(
                    upper_bound_of(b - 1) < us,
                    "{us} belongs to an earlier bucket"
                );
            }
        }
    }

    #[test]
    fn histogram_percentiles() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.summary().p99_ms, 0.0);
        for ms in 1..=100 {
            h.record_us(ms * 1000);
        }
        h.record_us(-5);
        let s = h.summary();
        assert_eq!(s.count, 101);
        assert!((49.0..=51.6).contains(&s.p50_ms), "{s}");
        assert!((98.0..=101.0).contains(&s.p99_ms), "{s}");
        assert_eq!(s.max_ms, 100.0);
        let mut other = LatencyHistogram::default();
        other.record_us(5_000_000);
        h.merge(&other);
        assert_eq!(h.summary().max_ms, 5000.0);
        assert_eq!(h.count(), 102);
    }
}
