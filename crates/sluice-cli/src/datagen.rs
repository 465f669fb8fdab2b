//! `sluice datagen`: the reference scenario's order generator. By default it
//! inserts one order into `retail.orders_info` every 3 s, as the scenario's
//! own app does; flags give it a rate (up to as fast as the database takes
//! it), a row count or duration, and a mix of updates and deletes, so it can
//! drive benchmarks and CDC tests.
//!
//! [`run`] is the generator itself and works on any tokio-postgres client;
//! [`main`] is the command-line wrapper (connection, signals, progress).

use std::collections::HashMap;
use std::fmt;
use std::io::{IsTerminal, Write as _};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use sluice_postgres::conn::{ConnParams, SslMode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The scenario generator's cities.
pub const CITIES: [&str; 6] = [
    "New Delhi",
    "Seattle",
    "New York",
    "Austin",
    "Chicago",
    "Cleveland",
];

/// The scenario's table, created when missing.
pub const CREATE_TABLE: &str = "CREATE SCHEMA IF NOT EXISTS retail;
CREATE TABLE IF NOT EXISTS retail.orders_info (
    orderid       SERIAL NOT NULL PRIMARY KEY,
    custid        INTEGER NOT NULL,
    amount        INTEGER NOT NULL,
    city          VARCHAR(255) NOT NULL,
    purchase_time VARCHAR(20) NOT NULL
);";

// One statement per kind of change and batch: arrays travel as three
// parameters, so a 500-row batch is one round trip instead of 500.
// purchase_time is the server's clock in UTC, so every row of a transaction
// shares its timestamp, as the scenario's "now" does.
const INSERT_SELECT: &str = "INSERT INTO retail.orders_info (custid, amount, city, purchase_time) \
     SELECT c, a, ci, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') \
     FROM unnest($1::int4[], $2::int4[], $3::text[]) AS t(c, a, ci)";
const UPDATE: &str = "UPDATE retail.orders_info o SET amount = v.a \
     FROM unnest($1::int4[], $2::int4[]) AS v(id, a) WHERE o.orderid = v.id";
const DELETE: &str = "DELETE FROM retail.orders_info WHERE orderid = ANY($1::int4[])";

/// At most this many existing order ids are loaded as update/delete targets,
/// so a huge table does not cost gigabytes of memory (the newest are kept).
const MAX_PRELOADED_IDS: i64 = 1_000_000;

/// The scenario's rate: one order every 3 s.
const DEFAULT_RATE: f64 = 1.0 / 3.0;
/// Batch size at `--rate max` unless `--batch` is given.
const MAX_RATE_BATCH: usize = 500;
/// When the database falls this far behind the schedule, the schedule
/// restarts instead of bursting to catch up.
const MAX_LAG: Duration = Duration::from_secs(1);
/// How often `progress` is called.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Exit code for a clean stop (also after SIGINT/SIGTERM).
const EXIT_OK: u8 = 0;
/// Exit code when the database failed us.
const EXIT_FAILED: u8 = 1;
/// Exit code for invalid flags.
const EXIT_BAD_FLAGS: u8 = 2;
/// Exit code after a second signal (no orderly stop).
const EXIT_INTERRUPTED: i32 = 130;

// ---------------------------------------------------------------------------
// Options.

/// How fast changes are made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// This many changes per second (finite, > 0).
    PerSecond(f64),
    /// As fast as the database takes them.
    Max,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Rate, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        match s.parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 => Ok(Rate::PerSecond(r)),
            Ok(_) => Err(format!("'{s}' is not a positive number of rows per second")),
            Err(_) => Err(format!(
                "'{s}' is neither a number of rows per second (e.g. 100, 0.5) nor 'max'"
            )),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Max => f.write_str("max"),
            // The scenario's 1/3 reads better as a period than as 0.333...
            Rate::PerSecond(r) if *r < 1.0 => {
                let period = format!("{:.3}", 1.0 / r);
                let period = period.trim_end_matches('0').trim_end_matches('.');
                write!(f, "one row every {period} s")
            }
            Rate::PerSecond(r) => write!(f, "{r} rows/s"),
        }
    }
}

/// What [`run`] does. Build it from [`DatagenArgs`] or directly.
#[derive(Debug, Clone)]
pub struct DatagenOptions {
    /// Changes per second.
    pub rate: Rate,
    /// Stop after this many changes (inserts + updates + deletes).
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Fraction (0..=1) of changes that update the amount of a known order.
    pub update_ratio: f64,
    /// Fraction (0..=1) of changes that delete a known order.
    pub delete_ratio: f64,
    /// Changes per transaction (>= 1).
    pub batch: usize,
    /// Seed of the random stream: the same seed gives the same changes.
    pub seed: u64,
    /// How often `run` reports progress (the command: once a second; the
    /// demo: often, to time each change's way to the sink).
    pub progress_every: Duration,
}

impl Default for DatagenOptions {
    /// The scenario's generator: one insert every 3 s, forever.
    fn default() -> DatagenOptions {
        DatagenOptions {
            rate: Rate::PerSecond(DEFAULT_RATE),
            count: None,
            duration: None,
            update_ratio: 0.0,
            delete_ratio: 0.0,
            batch: 1,
            seed: random_seed(),
            progress_every: PROGRESS_EVERY,
        }
    }
}

impl DatagenOptions {
    /// Checks the options that clap cannot check one flag at a time.
    pub fn validate(&self) -> Result<()> {
        if let Rate::PerSecond(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                bail!("--rate: must be a positive number of rows per second or 'max', got {r}");
            }
        }
        for (flag, v) in [
            ("--update-ratio", self.update_ratio),
            ("--delete-ratio", self.delete_ratio),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{flag}: must be a fraction between 0 and 1, got {v}");
            }
        }
        if self.update_ratio + self.delete_ratio > 1.0 {
            bail!(
                "--update-ratio {} plus --delete-ratio {} exceed 1: they are fractions of all changes",
                self.update_ratio,
                self.delete_ratio
            );
        }
        if self.batch == 0 {
            bail!("--batch: must be at least 1 row per transaction");
        }
        Ok(())
    }
}

/// The batch size used when `--batch` is not given: one row per
/// transaction at slow rates (each change is its own transaction, as in the
/// scenario), growing so that about 100 transactions run per second, and
/// 500 at `max`.
pub fn default_batch(rate: Rate) -> usize {
    match rate {
        Rate::Max => MAX_RATE_BATCH,
        // Truncation is the point: 250 rows/s -> 2 rows per transaction.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Rate::PerSecond(r) => ((r / 100.0) as usize).clamp(1, MAX_RATE_BATCH),
    }
}

/// Options of `sluice datagen`.
#[derive(Debug, Args)]
#[command(long_about = "Generates the reference scenario's orders in \
retail.orders_info (schema and table are created when missing). By default it \
behaves like the scenario's own generator: one insert every 3 s, custid \
uniform in 1..=1000, amount in 100..=199, city one of New Delhi, Seattle, New \
York, Austin, Chicago, Cleveland, purchase_time now (UTC, YYYY-MM-DD \
HH:MM:SS), until SIGINT/SIGTERM.\n\n\
The database is --pg URL (or the URL argument), otherwise the PGHOST, PGPORT, \
PGUSER, PGPASSWORD, PGDATABASE and PGSSLMODE environment variables.\n\n\
Progress goes to standard error about once a second, and a summary line at \
the end. SIGINT or SIGTERM finishes the current transaction, prints the \
summary and exits 0.\n\n\
Exit codes: 0 done or stopped, 1 database error, 2 invalid flags.")]
pub struct DatagenArgs {
    /// The database: a libpq URL (postgres://user:pass@host:port/db) or key=value string.
    #[arg(value_name = "URL", conflicts_with = "pg")]
    url: Option<String>,
    /// The database, as the URL argument.
    #[arg(long, value_name = "URL")]
    pg: Option<String>,
    /// Changes per second, or 'max' [default: one every 3 s].
    #[arg(long, value_name = "ROWS_PER_S|max")]
    rate: Option<Rate>,
    /// Stop after this many changes.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop after this long: 90s, 2m, 1h30m, 500ms (a bare number is seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Fraction of changes that update the amount of an existing order.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0, value_parser = parse_fraction)]
    update_ratio: f64,
    /// Fraction of changes that delete an existing order.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0, value_parser = parse_fraction)]
    delete_ratio: f64,
    /// Changes per transaction [default: 1 up to 100 rows/s, then rate/100, 500 at max].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch: Option<u32>,
    /// Seed of the random stream; the same seed makes the same changes [default: random, printed].
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
}

impl DatagenArgs {
    /// The generator options these flags ask for.
    pub fn options(&self) -> Result<DatagenOptions> {
        let rate = self.rate.unwrap_or(Rate::PerSecond(DEFAULT_RATE));
        let opts = DatagenOptions {
            rate,
            count: self.count,
            duration: self.duration,
            update_ratio: self.update_ratio,
            delete_ratio: self.delete_ratio,
            batch: self
                .batch
                .map_or_else(|| default_batch(rate), |b| b as usize),
            seed: self.seed.unwrap_or_else(random_seed),
            progress_every: PROGRESS_EVERY,
        };
        opts.validate()?;
        Ok(opts)
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{v} is not a fraction between 0 and 1")),
        Err(_) => Err(format!("'{s}' is not a number between 0 and 1 (e.g. 0.3)")),
    }
}

/// Parses `90s`, `2m`, `1h30m`, `500ms`, `1.5s` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let bad =
        || format!("'{s}' is not a duration: use a number with a unit, e.g. 90s, 2m, 1h30m, 500ms");
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| bad());
    }
    let mut total = 0.0_f64;
    let mut rest = text;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = &rest[unit_len..];
        let scale = match unit {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Truncation keeps the fast-changing low bits, which is all a seed needs.
    #[allow(clippy::cast_possible_truncation)]
    let low = nanos as u64;
    SplitMix64::new(low ^ u64::from(std::process::id()).rotate_left(32)).next_u64()
}

// ---------------------------------------------------------------------------
// Randomness: a fixed algorithm, so a seed means the same rows in every
// build and release (a library's generator may change between versions).

/// SplitMix64 (Steele, Lea, Flood 2014).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is below 2^-32 for the
    /// ranges used here).
    fn below(&mut self, n: usize) -> usize {
        // The product's high half is < n, so it fits usize.
        #[allow(clippy::cast_possible_truncation)]
        let v = ((u128::from(self.next_u64()) * n as u128) >> 64) as usize;
        v
    }

    /// Uniform in `lo..=hi`.
    fn range_i32(&mut self, lo: i32, hi: i32) -> i32 {
        let span = usize::try_from(i64::from(hi) - i64::from(lo) + 1).unwrap_or(1);
        let off = i32::try_from(self.below(span)).unwrap_or(0);
        lo + off
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        // 53 random bits: exactly representable.
        #[allow(clippy::cast_precision_loss)]
        let v = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        v
    }
}

// ---------------------------------------------------------------------------
// Pacing.

/// The schedule of a fixed rate: change `n` (0-based) is due `n / rate`
/// seconds after the origin. Due times come from the origin, not from the
/// previous change, so slow statements do not make the rate drift.
#[derive(Debug, Clone)]
pub struct Pacer {
    per_second: Option<f64>,
    origin: Instant,
    issued: u64,
}

impl Pacer {
    /// A schedule starting at `origin`.
    pub fn new(rate: Rate, origin: Instant) -> Pacer {
        Pacer {
            per_second: match rate {
                Rate::Max => None,
                Rate::PerSecond(r) => Some(r),
            },
            origin,
            issued: 0,
        }
    }

    /// When a batch of `n` more changes may start: when the last of them is
    /// due, so a batch never runs ahead of the rate. `None` at `max`.
    pub fn due(&self, n: u64) -> Option<Instant> {
        let r = self.per_second?;
        let last = (self.issued + n.max(1) - 1) as f64;
        Some(self.origin + Duration::from_secs_f64(last / r))
    }

    /// Records that `n` changes were issued at `now`. Behind schedule by
    /// more than a second (the database was slower than the rate), the
    /// schedule restarts at `now` rather than bursting to catch up.
    pub fn issued(&mut self, n: u64, now: Instant) {
        self.issued += n;
        if let Some(next) = self.due(1) {
            if now > next + MAX_LAG {
                self.origin = now;
                self.issued = 0;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The generator.

/// What has been done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Orders inserted.
    pub inserted: u64,
    /// Updates of an order's amount.
    pub updated: u64,
    /// Orders deleted.
    pub deleted: u64,
    /// Transactions committed.
    pub transactions: u64,
    /// Time since the generator started.
    pub elapsed: Duration,
}

impl Stats {
    /// All changes: inserts, updates and deletes.
    pub fn total(&self) -> u64 {
        self.inserted + self.updated + self.deleted
    }

    /// Average changes per second since the start.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.total() as f64 / secs
        } else {
            0.0
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} inserted, {} updated, {} deleted",
            self.inserted, self.updated, self.deleted
        )
    }
}

/// One transaction's changes.
#[derive(Debug, Default)]
struct Batch {
    custids: Vec<i32>,
    amounts: Vec<i32>,
    cities: Vec<&'static str>,
    /// orderid -> new amount; a second update of an order in the same
    /// batch replaces the first (one UPDATE touches a row once).
    updates: HashMap<i32, i32>,
    updated: u64,
    deletes: Vec<i32>,
}

/// The random stream and the orders known to exist.
struct Generator {
    rng: SplitMix64,
    update_ratio: f64,
    delete_ratio: f64,
    /// Targets for updates and deletes; kept only when there are any.
    known: Vec<i32>,
}

impl Generator {
    fn new_order(&mut self, b: &mut Batch) {
        b.custids.push(self.rng.range_i32(1, 1000));
        b.amounts.push(self.rng.range_i32(100, 199));
        b.cities.push(CITIES[self.rng.below(CITIES.len())]);
    }

    /// Draws `n` changes. Updates and deletes pick among the orders known
    /// before this batch, so ids never depend on the batch's own inserts;
    /// without a known order the change is an insert.
    fn batch(&mut self, n: usize) -> Batch {
        let mut b = Batch::default();
        for _ in 0..n {
            let x = self.rng.unit();
            if x < self.update_ratio && !self.known.is_empty() {
                let id = self.known[self.rng.below(self.known.len())];
                let amount = self.rng.range_i32(100, 199);
                // Two draws of one order in a batch are one UPDATE row.
                if b.updates.insert(id, amount).is_none() {
                    b.updated += 1;
                }
            } else if x < self.update_ratio + self.delete_ratio && !self.known.is_empty() {
                let id = self.known.swap_remove(self.rng.below(self.known.len()));
                b.deletes.push(id);
            } else {
                self.new_order(&mut b);
            }
        }
        b
    }
}

/// Creates `retail.orders_info` (and its schema) when missing.
pub async fn create_table(client: &tokio_postgres::Client) -> Result<()> {
    client
        .batch_execute(CREATE_TABLE)
        .await
        .context("creating retail.orders_info")
}

/// Runs the generator on `client` until `opts.count` changes are made,
/// `opts.duration` passes or `stop` is cancelled, then returns what it did.
/// Creates the table when missing. A stop lets the current transaction
/// commit. `progress` is called about once a second.
///
/// The client must not be used by anyone else meanwhile: batches of mixed
/// changes run as `BEGIN` ... `COMMIT` on it.
pub async fn run(
    client: &tokio_postgres::Client,
    opts: &DatagenOptions,
    stop: CancellationToken,
    mut progress: impl FnMut(&Stats),
) -> Result<Stats> {
    opts.validate()?;
    create_table(client).await?;
    let track = opts.update_ratio > 0.0 || opts.delete_ratio > 0.0;
    let mut known = Vec::new();
    if track {
        // Oldest first, so the same table gives the same random picks.
        let rows = client
            .query(
                "SELECT orderid FROM (SELECT orderid FROM retail.orders_info \
                 ORDER BY orderid DESC LIMIT $1) t ORDER BY orderid",
                &[&MAX_PRELOADED_IDS],
            )
            .await
            .context("reading the existing orders of retail.orders_info")?;
        known = rows.iter().map(|r| r.get::<_, i32>(0)).collect();
    }
    let insert_sql = if track {
        format!("{INSERT_SELECT} RETURNING orderid")
    } else {
        INSERT_SELECT.to_string()
    };
    let insert = client
        .prepare(&insert_sql)
        .await
        .context("preparing the insert")?;
    let update = client
        .prepare(UPDATE)
        .await
        .context("preparing the update")?;
    let delete = client
        .prepare(DELETE)
        .await
        .context("preparing the delete")?;

    let mut gen = Generator {
        rng: SplitMix64::new(opts.seed),
        update_ratio: opts.update_ratio,
        delete_ratio: opts.delete_ratio,
        known,
    };
    let start = Instant::now();
    let deadline = opts.duration.map(|d| start + d);
    let mut pacer = Pacer::new(opts.rate, start);
    let mut stats = Stats::default();
    // Never zero: the wait below wakes for each report.
    let every = opts.progress_every.max(Duration::from_millis(10));
    let mut next_report = start + every;
    let batch_size = opts.batch.max(1);

    loop {
        let remaining = opts.count.map(|c| c.saturating_sub(stats.total()));
        if remaining == Some(0) || stop.is_cancelled() {
            break;
        }
        let n = remaining.map_or(batch_size, |r| {
            usize::try_from(r).map_or(batch_size, |r| r.min(batch_size))
        });
        let mut due = pacer.due(n as u64);
        // Past the deadline no further batch would start anyway.
        if let (Some(d), Some(end)) = (due, deadline) {
            if d >= end {
                due = Some(end);
            }
        }
        // Wait for the batch's time, reporting progress meanwhile.
        let mut stopped = false;
        while let Some(d) = due {
            let now = Instant::now();
            if now >= d {
                break;
            }
            let wake = d.min(next_report);
            tokio::select! {
                () = stop.cancelled() => { stopped = true; break; }
                () = tokio::time::sleep_until(wake) => {}
            }
            if Instant::now() >= next_report {
                stats.elapsed = start.elapsed();
                progress(&stats);
                next_report += every;
            }
        }
        if stopped || deadline.is_some_and(|end| Instant::now() >= end) {
            break;
        }

        let b = gen.batch(n);
        let new_ids = execute(client, &b, &insert, &update, &delete).await?;
        if track {
            let mut ids = new_ids;
            // RETURNING's order is not guaranteed; sequence order is.
            ids.sort_unstable();
            gen.known.extend(ids);
        }
        stats.inserted += b.custids.len() as u64;
        stats.updated += b.updated;
        stats.deleted += b.deletes.len() as u64;
        stats.transactions += 1;
        let now = Instant::now();
        pacer.issued(n as u64, now);
        if now >= next_report {
            stats.elapsed = start.elapsed();
            progress(&stats);
            // Skip missed ticks after a long transaction instead of
            // reporting several times in a row.
            while next_report <= now {
                next_report += every;
            }
        }
    }
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// Runs one batch as one transaction; returns the inserted order ids when
/// the insert returns them.
async fn execute(
    client: &tokio_postgres::Client,
    b: &Batch,
    insert: &tokio_postgres::Statement,
    update: &tokio_postgres::Statement,
    delete: &tokio_postgres::Statement,
) -> Result<Vec<i32>> {
    let kinds = usize::from(!b.custids.is_empty())
        + usize::from(!b.updates.is_empty())
        + usize::from(!b.deletes.is_empty());
    // A single statement is a transaction of its own: two round trips saved.
    let explicit = kinds > 1;
    if explicit {
        client.batch_execute("BEGIN").await.context("BEGIN")?;
    }
    let result = async {
        let mut ids = Vec::new();
        if !b.custids.is_empty() {
            let rows = client
                .query(insert, &[&b.custids, &b.amounts, &b.cities])
                .await
                .context("inserting into retail.orders_info")?;
            ids = rows.iter().map(|r| r.get::<_, i32>(0)).collect();
        }
        if !b.updates.is_empty() {
            let (ids, amounts): (Vec<i32>, Vec<i32>) = b.updates.iter().unzip();
            client
                .execute(update, &[&ids, &amounts])
                .await
                .context("updating retail.orders_info")?;
        }
        if !b.deletes.is_empty() {
            client
                .execute(delete, &[&b.deletes])
                .await
                .context("deleting from retail.orders_info")?;
        }
        Ok::<_, anyhow::Error>(ids)
    }
    .await;
    match result {
        Ok(ids) => {
            if explicit {
                client.batch_execute("COMMIT").await.context("COMMIT")?;
            }
            Ok(ids)
        }
        Err(e) => {
            if explicit {
                // The statement's error is the one worth reporting.
                let _ = client.batch_execute("ROLLBACK").await;
            }
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------
// The command.

/// Where to connect: `--pg`/the URL argument, completed (like libpq) by
/// the `PG*` environment variables and defaults.
fn conn_params(url: Option<&str>) -> Result<ConnParams> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let cfg = match url {
        Some(u) => Some(tokio_postgres::Config::from_str(u).map_err(|e| {
            anyhow::anyhow!("--pg (or URL): not a valid connection URL or key=value string: {e}")
        })?),
        None => None,
    };
    let port = match cfg.as_ref().and_then(|c| c.get_ports().first().copied()) {
        Some(p) => p,
        None => match env("PGPORT") {
            Some(p) => p
                .parse()
                .map_err(|_| anyhow::anyhow!("PGPORT: '{p}' is not a port number"))?,
            None => 5432,
        },
    };
    let host = match cfg.as_ref().and_then(|c| c.get_hosts().first().cloned()) {
        Some(tokio_postgres::config::Host::Tcp(h)) => h,
        Some(tokio_postgres::config::Host::Unix(p)) => p.to_string_lossy().into_owned(),
        None => env("PGHOST").unwrap_or_else(|| default_host(port)),
    };
    let user = cfg
        .as_ref()
        .and_then(|c| c.get_user().map(str::to_string))
        .or_else(|| env("PGUSER"))
        .or_else(|| env("USER"))
        .unwrap_or_else(|| "postgres".to_string());
    let password = match cfg.as_ref().and_then(|c| c.get_password()) {
        Some(p) => Some(
            String::from_utf8(p.to_vec())
                .map_err(|_| anyhow::anyhow!("--pg: the password is not UTF-8"))?,
        ),
        None => env("PGPASSWORD"),
    };
    let dbname = cfg
        .as_ref()
        .and_then(|c| c.get_dbname().map(str::to_string))
        .or_else(|| env("PGDATABASE"))
        .unwrap_or_else(|| user.clone());
    let sslmode = match (&cfg, env("PGSSLMODE")) {
        (Some(c), _) => match c.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => SslMode::Disable,
            tokio_postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        },
        (None, Some(m)) => SslMode::parse(&m).ok_or_else(|| {
            anyhow::anyhow!(
                "PGSSLMODE: '{m}' is not one of disable, prefer, require, verify-ca, verify-full"
            )
        })?,
        (None, None) => SslMode::Prefer,
    };
    Ok(ConnParams {
        host,
        port,
        user,
        password,
        dbname,
        sslmode,
        sslrootcert: env("PGSSLROOTCERT"),
        connect_timeout: cfg
            .as_ref()
            .and_then(|c| c.get_connect_timeout().copied())
            .unwrap_or(Duration::from_secs(10)),
        application_name: "sluice datagen".to_string(),
    })
}

/// libpq's default: the local Unix socket when there is one, else localhost.
fn default_host(port: u16) -> String {
    for dir in ["/var/run/postgresql", "/tmp"] {
        if std::path::Path::new(dir)
            .join(format!(".s.PGSQL.{port}"))
            .exists()
        {
            return dir.to_string();
        }
    }
    "localhost".to_string()
}

/// Runs `sluice datagen`; returns the process exit code.
pub fn main(args: &DatagenArgs) -> u8 {
    let opts = match args.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sluice datagen: {e:#}");
            return EXIT_BAD_FLAGS;
        }
    };
    let params = match conn_params(args.pg.as_deref().or(args.url.as_deref())) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sluice datagen: {e:#}");
            return EXIT_BAD_FLAGS;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice datagen: starting the async runtime: {e}");
            return EXIT_FAILED;
        }
    };
    runtime.block_on(async {
        let stop = CancellationToken::new();
        // Listen before connecting, so an early signal is an orderly stop
        // rather than the default (immediate) termination.
        if let Err(e) = listen_for_signals(stop.clone()) {
            eprintln!("sluice datagen: cannot listen for SIGINT/SIGTERM: {e}");
            return EXIT_FAILED;
        }
        let client = match params.connect().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("sluice datagen: {e:#}");
                return EXIT_FAILED;
            }
        };
        eprintln!(
            "sluice datagen: retail.orders_info in database '{}' at {}:{}: rate {}, batch {}, \
             update ratio {}, delete ratio {}, seed {}",
            params.dbname,
            params.host,
            params.port,
            opts.rate,
            opts.batch,
            opts.update_ratio,
            opts.delete_ratio,
            opts.seed
        );
        let mut printer = ProgressPrinter::new();
        let result = run(&client, &opts, stop.clone(), |s| printer.print(s)).await;
        printer.finish();
        match result {
            Ok(stats) => {
                eprintln!(
                    "sluice datagen: done{}: {stats} ({} changes in {} transactions, {:.1}s, {} rows/s, seed {})",
                    if stop.is_cancelled() { " (stopped by signal)" } else { "" },
                    stats.total(),
                    stats.transactions,
                    stats.elapsed.as_secs_f64(),
                    fmt_rate(stats.rate()),
                    opts.seed
                );
                EXIT_OK
            }
            Err(e) => {
                eprintln!("sluice datagen: {e:#}");
                EXIT_FAILED
            }
        }
    })
}

/// Whole rows per second, with decimals only where they matter (the
/// scenario's 0.33).
fn fmt_rate(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.2}")
    } else {
        format!("{r:.0}")
    }
}

/// First SIGINT/SIGTERM: orderly stop. Second: exit at once.
fn listen_for_signals(stop: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            seen += 1;
            if seen == 1 {
                stop.cancel();
            } else {
                eprintln!("sluice datagen: second signal, exiting at once");
                std::process::exit(EXIT_INTERRUPTED);
            }
        }
    });
    Ok(())
}

/// Progress on standard error: one line per report, or one line kept up to
/// date when standard error is a terminal.
struct ProgressPrinter {
    tty: bool,
    last: Option<(Duration, u64)>,
    drawn: bool,
}

impl ProgressPrinter {
    fn new() -> ProgressPrinter {
        ProgressPrinter {
            tty: std::io::stderr().is_terminal(),
            last: None,
            drawn: false,
        }
    }

    fn print(&mut self, s: &Stats) {
        let (t0, n0) = self.last.unwrap_or((Duration::ZERO, 0));
        let dt = s.elapsed.saturating_sub(t0).as_secs_f64();
        let current = if dt > 0.0 {
            (s.total() - n0) as f64 / dt
        } else {
            0.0
        };
        self.last = Some((s.elapsed, s.total()));
        let line = format!(
            "datagen: {s}, {} rows/s now, {} rows/s average, {:.0}s",
            fmt_rate(current),
            fmt_rate(s.rate()),
            s.elapsed.as_secs_f64()
        );
        let mut err = std::io::stderr().lock();
        // Progress is a courtesy: a closed stderr must not stop the generator.
        let _ = if self.tty {
            self.drawn = true;
            write!(err, "\r\x1b[2K{line}").and_then(|()| err.flush())
        } else {
            writeln!(err, "{line}")
        };
    }

    fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_is_one_row_every_three_seconds() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Rate::PerSecond(DEFAULT_RATE), t0);
        let mut dues = Vec::new();
        for _ in 0..4 {
            let d = p.due(1).expect("a fixed rate has due times");
            dues.push(d - t0);
            // Issued on time.
            p.issued(1, d);
        }
        let secs: Vec<f64> = dues.iter().map(Duration::as_secs_f64).collect();
        for (got, want) in secs.iter().zip([0.0, 3.0, 6.0, 9.0]) {
            assert!((got - want).abs() < 1e-6, "{secs:?}");
        }
    }

    #[test]
    fn schedule_does_not_drift_when_issued_late() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Rate::PerSecond(10.0), t0);
        // Each change issued 50 ms late: the next is still due on the grid.
        for i in 0..5u32 {
            let d = p.due(1).expect("due");
            let want = Duration::from_millis(100 * u64::from(i));
            assert_eq!(d - t0, want);
            p.issued(1, d + Duration::from_millis(50));
        }
    }

    #[test]
    fn a_batch_is_due_when_its_last_row_is() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Rate::PerSecond(100.0), t0);
        assert_eq!(p.due(10).expect("due") - t0, Duration::from_millis(90));
        p.issued(10, t0 + Duration::from_millis(90));
        assert_eq!(p.due(10).expect("due") - t0, Duration::from_millis(190));
    }

    #[test]
    fn far_behind_schedule_restarts_instead_of_bursting() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Rate::PerSecond(10.0), t0);
        let late = t0 + Duration::from_secs(5);
        p.issued(1, late);
        assert_eq!(p.due(1), Some(late));
        assert_eq!(p.due(2).map(|d| d - late), Some(Duration::from_millis(100)));
    }

    #[test]
    fn max_rate_has_no_schedule() {
        let p = Pacer::new(Rate::Max, Instant::now());
        assert_eq!(p.due(500), None);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "s", "2x", "-1s", "1h-", "fast"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn rates_parse() {
        assert_eq!("max".parse::<Rate>(), Ok(Rate::Max));
        assert_eq!("250".parse::<Rate>(), Ok(Rate::PerSecond(250.0)));
        assert_eq!("0.5".parse::<Rate>(), Ok(Rate::PerSecond(0.5)));
        assert_eq!(
            Rate::PerSecond(DEFAULT_RATE).to_string(),
            "one row every 3 s"
        );
        assert_eq!(Rate::PerSecond(250.0).to_string(), "250 rows/s");
        for bad in ["fast", "0", "-3", "inf", "NaN"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn default_batches() {
        assert_eq!(default_batch(Rate::PerSecond(DEFAULT_RATE)), 1);
        assert_eq!(default_batch(Rate::PerSecond(100.0)), 1);
        assert_eq!(default_batch(Rate::PerSecond(1000.0)), 10);
        assert_eq!(default_batch(Rate::PerSecond(1e9)), MAX_RATE_BATCH);
        assert_eq!(default_batch(Rate::Max), MAX_RATE_BATCH);
    }

    #[test]
    fn ratios_together_cannot_exceed_one() {
        let o = DatagenOptions {
            update_ratio: 0.7,
            delete_ratio: 0.4,
            ..DatagenOptions::default()
        };
        let e = o.validate().expect_err("1.1 > 1").to_string();
        assert!(
            e.contains("--update-ratio") && e.contains("--delete-ratio"),
            "{e}"
        );
    }

    #[test]
    fn the_mix_follows_the_ratios() {
        let mut g = Generator {
            rng: SplitMix64::new(7),
            update_ratio: 0.3,
            delete_ratio: 0.1,
            known: (1..=1_000_000).collect(),
        };
        let b = g.batch(10_000);
        let (ins, upd, del) = (b.custids.len(), b.updated, b.deletes.len());
        // An order drawn twice for update in one batch is one update.
        assert_eq!(usize::try_from(upd).expect("small"), b.updates.len());
        let total = ins + usize::try_from(upd).expect("small") + del;
        assert!((9_950..=10_000).contains(&total), "{total}");
        assert!((2700..3300).contains(&upd), "{upd} updates");
        assert!((800..1200).contains(&del), "{del} deletes");
    }
}
