//! What a running source task says about itself while it runs: a
//! snapshot's progress (rows done of PostgreSQL's estimate per table, rate,
//! ETA) every `sluice.progress.interval.ms`, as a progress bar instead when
//! stderr is a terminal and the program asked for bars, and while
//! streaming a one-line summary (events/s, lag, last LSN, slot WAL) every
//! `sluice.summary.interval.ms`.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice_core::telemetry::{now_us, SnapshotProgress, SourceTelemetry};
use tokio::task::JoinHandle;

static BARS: AtomicBool = AtomicBool::new(false);

/// Draws snapshot progress as a bar on stderr instead of log lines (for a
/// program whose stderr is a terminal).
pub fn show_progress_bars(on: bool) {
    BARS.store(on, Relaxed);
}

/// The progress reporter of one source task; stops when dropped.
pub(crate) struct Progress(JoinHandle<()>);

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often a source's progress is looked at.
const TICK: Duration = Duration::from_millis(500);

/// Starts reporting for the task `label` ("source connector 'x' task 0").
pub(crate) fn spawn(
    label: String,
    telemetry: Arc<SourceTelemetry>,
    every: Duration,
    summary_every: Option<Duration>,
) -> Progress {
    Progress(tokio::spawn(async move {
        Reporter {
            label,
            telemetry,
            every,
            summary_every,
            bar: None,
            last_line: None,
            rate: RateEstimate::default(),
            summary_from: None,
        }
        .run()
        .await
    }))
}

struct Reporter {
    label: String,
    telemetry: Arc<SourceTelemetry>,
    every: Duration,
    summary_every: Option<Duration>,
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
    rate: RateEstimate,
    /// When the summary period began and the event count then.
    summary_from: Option<(Instant, u64)>,
}

/// Rows per second over the last readings.
#[derive(Default)]
struct RateEstimate {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl RateEstimate {
    fn add(&mut self, rows: u64) -> Option<f64> {
        let now = Instant::now();
        self.samples.push_back((now, rows));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(20))
        {
            self.samples.pop_front();
        }
        let (t0, r0) = *self.samples.front()?;
        let secs = now.duration_since(t0).as_secs_f64();
        (secs >= 1.0).then(|| rows.saturating_sub(r0) as f64 / secs)
    }
}

fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

fn eta(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// One line about a running snapshot.
fn snapshot_line(label: &str, s: &SnapshotProgress, rate: Option<f64>) -> String {
    let (done, total) = s.rows();
    let pct = if total > 0 {
        format!(" ({:.0}%)", done as f64 * 100.0 / total as f64)
    } else {
        String::new()
    };
    let tables_done = s.tables.iter().filter(|t| t.done).count();
    let current = s
        .tables
        .iter()
        .find(|t| !t.done && t.rows_scanned > 0)
        .map(|t| match t.estimated_rows {
            Some(e) => format!(
                "; {} {} of ~{}",
                t.name,
                t.rows_scanned,
                e.max(t.rows_scanned)
            ),
            None => format!("; {} {}", t.name, t.rows_scanned),
        })
        .unwrap_or_default();
    let speed = match rate {
        Some(r) if r > 0.0 => {
            let left = total.saturating_sub(done) as f64;
            format!(", {r:.0} rows/s, ETA {}", eta(left / r))
        }
        _ => String::new(),
    };
    format!(
        "{label}: snapshot {done} of ~{total} rows{pct}, {tables_done}/{} tables done{speed}{current}",
        s.tables.len()
    )
}

impl Reporter {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let snap = self.telemetry.snapshot();
            if snap.running {
                self.snapshot(&snap);
                continue;
            }
            if let Some(bar) = self.bar.take() {
                let (done, _) = snap.rows();
                bar.set_length(done);
                bar.set_position(done);
                bar.finish_and_clear();
            }
            self.summary();
        }
    }

    fn snapshot(&mut self, s: &SnapshotProgress) {
        let (done, total) = s.rows();
        let rate = self.rate.add(done);
        if BARS.load(Relaxed) {
            let bar = self.bar.get_or_insert_with(|| {
                let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                if let Ok(style) = ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} rows {per_sec} ETA {eta} {msg}",
                ) {
                    b.set_style(style.progress_chars("=> "));
                }
                b.set_prefix(format!("{} snapshot", self.label));
                b
            });
            bar.set_length(total.max(done));
            bar.set_position(done);
            if let Some(t) = s.tables.iter().find(|t| !t.done && t.rows_scanned > 0) {
                bar.set_message(t.name.clone());
            }
            return;
        }
        if self.last_line.is_none_or(|t| t.elapsed() >= self.every) {
            self.last_line = Some(Instant::now());
            tracing::info!("{}", snapshot_line(&self.label, s, rate));
        }
    }

    fn summary(&mut self) {
        let Some(every) = self.summary_every else {
            return;
        };
        let c = self.telemetry.counts();
        let streamed = c.total - c.reads;
        let (from, before) = *self.summary_from.get_or_insert((Instant::now(), streamed));
        let secs = from.elapsed().as_secs_f64();
        if secs < every.as_secs_f64() {
            return;
        }
        self.summary_from = Some((Instant::now(), streamed));
        let n = streamed.saturating_sub(before);
        let lag = if c.last_commit_us > 0 && c.last_event_us > 0 {
            format!("{} ms", (c.last_event_us - c.last_commit_us).max(0) / 1000)
        } else {
            "n/a".into()
        };
        let last = if c.last_event_us > 0 {
            format!(
                ", last event {:.0} s ago at LSN {}",
                (now_us() - c.last_event_us).max(0) as f64 / 1e6,
                format_lsn(c.last_lsn)
            )
        } else {
            String::new()
        };
        let slot = self
            .telemetry
            .slot()
            .and_then(|s| {
                s.retained_bytes
                    .map(|b| format!(", slot {} retains {:.1} MiB", s.name, b as f64 / 1048576.0))
            })
            .unwrap_or_default();
        tracing::info!(
            "{}: streamed {n} events in {secs:.0} s ({:.1}/s), behind source {lag}{last}{slot}",
            self.label,
            n as f64 / secs.max(1e-9)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::telemetry::TableProgress;

    #[test]
    fn snapshot_lines_say_rows_tables_rate_and_eta() {
        let s = SnapshotProgress {
            running: true,
            tables: vec![
                TableProgress {
                    name: "public.a".into(),
                    rows_scanned: 100,
                    estimated_rows: Some(100),
                    done: true,
                },
                TableProgress {
                    name: "public.b".into(),
                    rows_scanned: 400,
                    estimated_rows: Some(900),
                    done: false,
                },
            ],
            ..SnapshotProgress::default()
        };
        let line = snapshot_line("source connector 'pg' task 0", &s, Some(100.0));
        assert_eq!(
            line,
            "source connector 'pg' task 0: snapshot 500 of ~1000 rows (50%), 1/2 tables done, 100 rows/s, ETA 5s; public.b 400 of ~900"
        );
        assert_eq!(eta(3725.0), "1h02m");
        assert_eq!(format_lsn(0x1_0000_00AB), "1/AB");
    }
}
