//! The WAL guard: while a session runs (snapshot and streaming alike) a
//! side task reads the replication slot every `slot.monitor.interval.ms`
//! over its own connection and
//! - records its confirmed position, retained WAL, `wal_status` and
//!   `safe_wal_size` in the task's telemetry (metrics, status);
//! - warns when the slot retains more than `slot.retained.wal.warn.bytes`,
//!   saying what to do;
//! - marks the task's status with an error while the slot is about to be
//!   invalidated (`wal_status` `unreserved`, or less than a fifth of
//!   `max_slot_wal_keep_size` left before it would be), before PostgreSQL
//!   invalidates it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_core::telemetry::{now_us, HealthNote, SlotFigures, SourceTelemetry};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::config::PostgresConfig;

/// How often a standing warning is logged again.
const WARN_AGAIN: Duration = Duration::from_secs(600);

/// The guard's task; aborted when dropped (the session ended).
pub struct SlotGuard(JoinHandle<()>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts guarding the slot of `cfg`.
pub fn spawn(cfg: &PostgresConfig, telemetry: Arc<SourceTelemetry>) -> SlotGuard {
    let cfg = cfg.clone();
    SlotGuard(tokio::spawn(async move { watch(cfg, telemetry).await }))
}

async fn watch(cfg: PostgresConfig, telemetry: Arc<SourceTelemetry>) {
    let mut client: Option<Client> = None;
    // The level of the note last logged, and when.
    let mut last_logged: Option<(bool, Instant)> = None;
    let mut tick = tokio::time::interval(cfg.slot_monitor_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if client.as_ref().is_none_or(Client::is_closed) {
            client = match cfg.conn.connect().await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::debug!(slot = %cfg.slot_name, "slot monitor: connecting: {e:#}");
                    continue;
                }
            };
        }
        let Some(c) = client.as_ref() else { continue };
        let figures = match read(c, &cfg.slot_name).await {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(slot = %cfg.slot_name, "slot monitor: {e:#}");
                client = None;
                continue;
            }
        };
        let note = judge(&cfg, &figures);
        // Logged when it appears or changes level, then every WARN_AGAIN.
        match &note {
            Some(n) => {
                let due = match last_logged {
                    Some((error, at)) => error != n.error || at.elapsed() >= WARN_AGAIN,
                    None => true,
                };
                if due {
                    if n.error {
                        tracing::error!("connector {}: {}", cfg.name, n.message);
                    } else {
                        tracing::warn!("connector {}: {}", cfg.name, n.message);
                    }
                    last_logged = Some((n.error, Instant::now()));
                }
            }
            None => {
                if last_logged.take().is_some() {
                    tracing::info!(
                        "connector {}: replication slot {} is back within its limits",
                        cfg.name,
                        cfg.slot_name
                    );
                }
            }
        }
        telemetry.set_health(note);
        telemetry.set_slot(figures.slot);
    }
}

/// The slot as read, and `max_slot_wal_keep_size` in bytes (None: no
/// limit).
#[derive(Debug, Clone)]
pub struct Reading {
    /// The slot's figures.
    pub slot: SlotFigures,
    /// `max_slot_wal_keep_size` in bytes, if set.
    pub keep_size: Option<i64>,
}

/// Reads `slot`'s figures; None when it does not exist.
pub async fn read(client: &Client, slot: &str) -> anyhow::Result<Option<Reading>> {
    use anyhow::Context as _;
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .context("reading the server version")?
        .get(0);
    // wal_status and safe_wal_size arrived with PostgreSQL 13.
    let sql = if version >= 130000 {
        "SELECT confirmed_flush_lsn::text, \
                pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, \
                wal_status::text, safe_wal_size::bigint, \
                (SELECT CASE WHEN setting::bigint < 0 THEN NULL ELSE setting::bigint * 1048576 END \
                 FROM pg_settings WHERE name = 'max_slot_wal_keep_size') \
         FROM pg_replication_slots WHERE slot_name = $1"
    } else {
        "SELECT confirmed_flush_lsn::text, \
                pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, \
                NULL::text, NULL::bigint, NULL::bigint \
         FROM pg_replication_slots WHERE slot_name = $1"
    };
    let row = client
        .query_opt(sql, &[&slot])
        .await
        .with_context(|| format!("reading replication slot {slot}"))?;
    Ok(row.map(|r| {
        let lsn: Option<String> = r.get(0);
        Reading {
            slot: SlotFigures {
                name: slot.to_string(),
                confirmed_flush_lsn: lsn.as_deref().and_then(parse_lsn),
                retained_bytes: r.get(1),
                wal_status: r.get(2),
                safe_wal_size: r.get(3),
                read_us: now_us(),
            },
            keep_size: r.get(4),
        }
    }))
}

fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

fn mib(b: i64) -> String {
    format!("{:.0} MiB", b as f64 / 1048576.0)
}

/// What the status should say about a slot read as `r`.
pub fn judge(cfg: &PostgresConfig, r: &Reading) -> Option<HealthNote> {
    let slot = &r.slot;
    let retained = slot.retained_bytes.unwrap_or(0);
    let near_loss = match (slot.safe_wal_size, r.keep_size) {
        (Some(safe), Some(keep)) if keep > 0 => safe < keep / 5,
        _ => false,
    };
    if slot.wal_status.as_deref() == Some("unreserved") || near_loss {
        return Some(HealthNote {
            error: true,
            message: format!(
                "replication slot {} retains {} of WAL and is about to be invalidated by PostgreSQL (wal_status={}, {} left before max_slot_wal_keep_size={}): \
                 once invalidated its changes are gone and a new snapshot is needed. Fix: resume or speed up the sinks behind it (paused, failed or slow connectors), \
                 or raise max_slot_wal_keep_size",
                cfg.slot_name,
                mib(retained),
                slot.wal_status.as_deref().unwrap_or("?"),
                slot.safe_wal_size.map_or_else(|| "?".into(), mib),
                r.keep_size.map_or_else(|| "?".into(), mib),
            ),
        });
    }
    if cfg.slot_warn_bytes > 0 && retained > cfg.slot_warn_bytes {
        return Some(HealthNote {
            error: false,
            message: format!(
                "replication slot {} retains {} of WAL (over slot.retained.wal.warn.bytes={}): PostgreSQL keeps that WAL on disk until the slot's changes are confirmed. \
                 Fix: check that the sinks behind this connector run and keep up (paused or failed connectors hold the slot back); \
                 set max_slot_wal_keep_size to bound it",
                cfg.slot_name,
                mib(retained),
                cfg.slot_warn_bytes
            ),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_parse() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("x"), None);
    }
}
