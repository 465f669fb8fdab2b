//! The PostgreSQL source's configuration: Debezium's property names,
//! defaults and 1.x aliases, checked before anything connects.

use std::time::Duration;

use regex::Regex;
use sluice_core::config::{
    ConfigDef, ConfigError, ConfigErrors, ConfigKey, ConfigType, Parsed, Props,
};

use crate::catalog::TableId;
use crate::conn::{ConnParams, SslMode};

/// `snapshot.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Snapshot when no offset exists, then stream.
    Initial,
    /// Snapshot on every start, then stream.
    Always,
    /// Snapshot when no offset exists, then stop.
    InitialOnly,
    /// Never snapshot; stream only (`never` is the 1.x name).
    NoData,
    /// Snapshot when no offset exists or the stored position is no longer
    /// available from the slot.
    WhenNeeded,
}

/// `publication.autocreate.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicationMode {
    /// Create `FOR ALL TABLES` when missing.
    AllTables,
    /// Create or update `FOR TABLE <included tables>`.
    Filtered,
    /// Never create: it must exist.
    Disabled,
    /// Create with no tables when missing; the user adds them.
    NoTables,
}

/// `event.converting.failure.handling.mode`: what a value that cannot be
/// converted becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureMode {
    /// Stop the connector, naming the table, column and value.
    Fail,
    /// Emit null for the value and log a warning (Debezium's default).
    #[default]
    Warn,
    /// Emit null for the value, logging only at debug level.
    Skip,
}

/// Operations that `skipped.operations` may name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkippedOps {
    /// Skip creates.
    pub create: bool,
    /// Skip updates.
    pub update: bool,
    /// Skip deletes.
    pub delete: bool,
    /// Skip truncates.
    pub truncate: bool,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// Connector name (for the offset key and application_name).
    pub name: String,
    /// Connection parameters.
    pub conn: ConnParams,
    /// `topic.prefix`.
    pub prefix: String,
    /// `plugin.name` as given (only pgoutput is used).
    pub plugin_name: String,
    /// `slot.name`.
    pub slot_name: String,
    /// `slot.drop.on.stop`.
    pub slot_drop_on_stop: bool,
    /// `publication.name`.
    pub publication_name: String,
    /// `publication.autocreate.mode`.
    pub publication_mode: PublicationMode,
    /// `snapshot.mode`.
    pub snapshot_mode: SnapshotMode,
    /// Parallel snapshot readers (`snapshot.max.threads`).
    pub snapshot_threads: usize,
    /// Smallest block range one snapshot reader takes (`sluice.snapshot.chunk.blocks`).
    pub snapshot_chunk_blocks: u64,
    /// `snapshot.fetch.size`: rows per chunk hand-off.
    pub snapshot_fetch_size: usize,
    /// `table.include.list`.
    pub table_include: Vec<Regex>,
    /// `table.exclude.list`.
    pub table_exclude: Vec<Regex>,
    /// `schema.include.list`.
    pub schema_include: Vec<Regex>,
    /// `schema.exclude.list`.
    pub schema_exclude: Vec<Regex>,
    /// `column.include.list`.
    pub column_include: Vec<Regex>,
    /// `column.exclude.list`.
    pub column_exclude: Vec<Regex>,
    /// `message.prefix.include.list`.
    pub message_prefix_include: Vec<Regex>,
    /// `message.prefix.exclude.list`.
    pub message_prefix_exclude: Vec<Regex>,
    /// `message.key.columns`: (table regex, key columns).
    pub message_key_columns: Vec<(Regex, Vec<String>)>,
    /// `tombstones.on.delete`.
    pub tombstones_on_delete: bool,
    /// `skipped.operations`.
    pub skipped: SkippedOps,
    /// `provide.transaction.metadata`.
    pub transaction_metadata: bool,
    /// `heartbeat.interval.ms` (None = off).
    pub heartbeat_interval: Option<Duration>,
    /// `heartbeat.action.query`.
    pub heartbeat_action_query: Option<String>,
    /// `heartbeat.topics.prefix`.
    pub heartbeat_topics_prefix: String,
    /// `max.batch.size`.
    pub max_batch_size: usize,
    /// `signal.data.collection`: the signal table, when one is set.
    pub signal_table: Option<TableId>,
    /// `signal.enabled.channels` has `source`.
    pub signal_source_channel: bool,
    /// `incremental.snapshot.chunk.size`.
    pub incremental_chunk_size: usize,
    /// `read.only`: incremental snapshots write nothing to the database.
    pub read_only: bool,
    /// `status.update.interval.ms`.
    pub status_interval: Duration,
    /// `slot.retained.wal.warn.bytes`: WAL the slot may retain before the
    /// source warns (0: never).
    pub slot_warn_bytes: i64,
    /// `slot.monitor.interval.ms`: how often the slot's WAL is read.
    pub slot_monitor_interval: Duration,
    /// `errors.max.retries` (-1 = unlimited).
    pub max_retries: i64,
    /// `retriable.restart.connector.wait.ms`: the longest wait between retries.
    pub retry_max_wait: Duration,
    /// Use protocol version 2 with streaming of in-progress transactions
    /// when the server supports it (`sluice.streaming.in.progress`).
    pub stream_in_progress: bool,
    /// Memory held for in-progress transactions before spilling to disk.
    pub spill_memory_bytes: usize,
    /// Directory for spill files.
    pub spill_dir: Option<String>,
    /// Type mapping modes.
    pub type_modes: sluice_pgtypes::TypeModes,
    /// `sluice.debezium.compatibility`: the Debezium release whose event
    /// format is produced.
    pub format: sluice_core::debezium::Format,
    /// `event.converting.failure.handling.mode`.
    pub failure_mode: FailureMode,
    /// `extended.headers.enabled`: the `__debezium.context.*` headers
    /// (Debezium 3.2+; never under the 2.7 format).
    pub context_headers: bool,
    /// The id of this run of the task (`__debezium.context.runId`): a new one
    /// each time a task is created.
    pub run_id: String,
}

/// The declared keys.
pub fn config_def() -> ConfigDef {
    use ConfigType::*;
    ConfigDef::new(vec![
        ConfigKey::new(
            "topic.prefix",
            String,
            "Prefix of every topic name; identifies this server in offsets.",
        )
        .required()
        .aliases(&["database.server.name"]),
        ConfigKey::new(
            "database.hostname",
            String,
            "Host name or IP of the PostgreSQL server.",
        )
        .required(),
        ConfigKey::new("database.port", Int, "Port of the PostgreSQL server.").default("5432"),
        ConfigKey::new(
            "database.user",
            String,
            "User to connect as (needs the REPLICATION attribute).",
        )
        .required(),
        ConfigKey::new(
            "database.password",
            Password,
            "Password; PGPASSWORD is used when absent.",
        ),
        ConfigKey::new("database.dbname", String, "Database to capture.").required(),
        ConfigKey::new("database.sslmode", Enum, "TLS mode.")
            .default("prefer")
            .allowed(&[
                "disable",
                "prefer",
                "require",
                "verify-ca",
                "verify-full",
                "allow",
            ]),
        ConfigKey::new(
            "database.sslrootcert",
            String,
            "PEM file of trusted root certificates.",
        ),
        ConfigKey::new(
            "database.sslcert",
            String,
            "Client certificate (not supported yet: ignored with a warning).",
        ),
        ConfigKey::new(
            "database.sslkey",
            String,
            "Client key (not supported yet: ignored with a warning).",
        ),
        ConfigKey::new(
            "database.sslpassword",
            Password,
            "Client key password (ignored).",
        ),
        ConfigKey::new("database.connect.timeout.ms", Int, "Connect timeout.").default("30000"),
        ConfigKey::new(
            "plugin.name",
            Enum,
            "Logical decoding plugin; Sluice always decodes pgoutput.",
        )
        .default("pgoutput")
        .allowed(&[
            "pgoutput",
            "decoderbufs",
            "wal2json",
            "wal2json_streaming",
            "wal2json_rds",
            "wal2json_rds_streaming",
        ]),
        ConfigKey::new("slot.name", String, "Replication slot name.").default("debezium"),
        ConfigKey::new(
            "slot.drop.on.stop",
            Bool,
            "Drop the slot when the connector stops.",
        )
        .default("false"),
        ConfigKey::new(
            "slot.max.retries",
            Int,
            "Retries when the slot is held by another process.",
        )
        .default("6"),
        ConfigKey::new("slot.retry.delay.ms", Int, "Wait between slot retries.").default("10000"),
        ConfigKey::new("publication.name", String, "Publication name.").default("dbz_publication"),
        ConfigKey::new(
            "publication.autocreate.mode",
            Enum,
            "How the publication is managed.",
        )
        .default("all_tables")
        .allowed(&["all_tables", "filtered", "disabled", "no_tables"]),
        ConfigKey::new("snapshot.mode", Enum, "When to take the initial snapshot.")
            .default("initial")
            .allowed(&[
                "initial",
                "always",
                "initial_only",
                "no_data",
                "never",
                "when_needed",
                "exported",
            ]),
        ConfigKey::new(
            "snapshot.max.threads",
            Int,
            "Parallel snapshot readers (chunks of one table run in parallel).",
        ),
        ConfigKey::new(
            "snapshot.fetch.size",
            Int,
            "Rows handed over per snapshot batch.",
        )
        .default("10240"),
        ConfigKey::new(
            "snapshot.lock.timeout.ms",
            Int,
            "Accepted for compatibility; Sluice takes no table locks.",
        )
        .default("10000"),
        ConfigKey::new(
            "table.include.list",
            RegexList,
            "Tables to capture (regexes over schema.table).",
        )
        .aliases(&["table.whitelist"]),
        ConfigKey::new("table.exclude.list", RegexList, "Tables not to capture.")
            .aliases(&["table.blacklist"]),
        ConfigKey::new("schema.include.list", RegexList, "Schemas to capture.")
            .aliases(&["schema.whitelist"]),
        ConfigKey::new("schema.exclude.list", RegexList, "Schemas not to capture.")
            .aliases(&["schema.blacklist"]),
        ConfigKey::new(
            "column.include.list",
            RegexList,
            "Columns to capture (regexes over schema.table.column).",
        )
        .aliases(&["column.whitelist"]),
        ConfigKey::new("column.exclude.list", RegexList, "Columns not to capture.")
            .aliases(&["column.blacklist"]),
        ConfigKey::new(
            "message.prefix.include.list",
            RegexList,
            "Logical decoding message prefixes to capture (pg_logical_emit_message, PostgreSQL 14+).",
        ),
        ConfigKey::new(
            "message.prefix.exclude.list",
            RegexList,
            "Logical decoding message prefixes not to capture.",
        ),
        ConfigKey::new(
            "signal.enabled.channels",
            List,
            "Channels signals arrive on: source (the signal table), kafka (signal.kafka.topic). The worker's REST action (POST /connectors/{name}/signals) always works.",
        )
        .default("source"),
        ConfigKey::new(
            "signal.data.collection",
            String,
            "The signal table, schema.table, with columns (id, type, data): rows inserted there are signals.",
        ),
        ConfigKey::new(
            "signal.kafka.topic",
            String,
            "Topic of the kafka signal channel (default <topic.prefix>-signal); records keyed by topic.prefix are signals.",
        ),
        ConfigKey::new(
            "signal.kafka.bootstrap.servers",
            String,
            "Brokers of the kafka signal channel.",
        ),
        ConfigKey::new(
            "signal.kafka.groupId",
            String,
            "Consumer group of the kafka signal channel (default kafka-signal).",
        ),
        ConfigKey::new(
            "signal.poll.interval.ms",
            Int,
            "How often polled signal channels are read.",
        )
        .default("5000"),
        ConfigKey::new(
            "incremental.snapshot.chunk.size",
            Int,
            "Rows per chunk of an incremental snapshot.",
        )
        .default("1024"),
        ConfigKey::new(
            "incremental.snapshot.watermarking.strategy",
            Enum,
            "How the watermarks around a chunk are kept: Sluice writes them as logical decoding messages, so neither strategy leaves rows behind.",
        )
        .default("insert_insert")
        .allowed(&["insert_insert", "insert_delete"]),
        ConfigKey::new(
            "read.only",
            Bool,
            "Take incremental snapshots without writing to the database: each chunk's window is bounded by its read's transaction snapshot and the WAL position after it.",
        )
        .default("false"),
        ConfigKey::new(
            "message.key.columns",
            String,
            "Key columns per table: 'schema.table:col1,col2;...'.",
        ),
        ConfigKey::new(
            "sluice.snapshot.chunk.blocks",
            Int,
            "Smallest range of 8 KiB heap blocks one snapshot reader takes; smaller tables are read whole.",
        )
        .default("1024"),
        ConfigKey::new(
            "tombstones.on.delete",
            Bool,
            "Follow each delete with a tombstone.",
        )
        .default("true"),
        ConfigKey::new(
            "skipped.operations",
            List,
            "Operations not emitted: c, u, d, t, or none.",
        )
        .default("t"),
        ConfigKey::new(
            "provide.transaction.metadata",
            Bool,
            "Emit BEGIN/END events and a transaction block.",
        )
        .default("false"),
        ConfigKey::new(
            "heartbeat.interval.ms",
            Int,
            "Heartbeat interval; 0 disables heartbeats.",
        )
        .default("0"),
        ConfigKey::new(
            "heartbeat.action.query",
            String,
            "SQL run on each heartbeat.",
        ),
        ConfigKey::new("heartbeat.topics.prefix", String, "Heartbeat topic prefix.")
            .default("__debezium-heartbeat"),
        ConfigKey::new(
            "max.batch.size",
            Int,
            "Records handed to the worker per batch.",
        )
        .default("2048"),
        ConfigKey::new(
            "max.queue.size",
            Int,
            "Accepted for compatibility; the worker bounds its queues.",
        )
        .default("8192"),
        ConfigKey::new("poll.interval.ms", Int, "Accepted for compatibility.").default("500"),
        ConfigKey::new(
            "slot.retained.wal.warn.bytes",
            Int,
            "WAL the replication slot may retain before the source warns (in the log, the status and the metrics); 0 never warns.",
        )
        .default("1073741824"),
        ConfigKey::new(
            "slot.monitor.interval.ms",
            Int,
            "How often the source reads its slot's confirmed position, retained WAL and wal_status.",
        )
        .default("10000"),
        ConfigKey::new(
            "status.update.interval.ms",
            Int,
            "Standby status update interval.",
        )
        .default("10000"),
        ConfigKey::new(
            "errors.max.retries",
            Int,
            "Retries on connection errors; -1 = unlimited.",
        )
        .default("-1"),
        ConfigKey::new(
            "retriable.restart.connector.wait.ms",
            Int,
            "Longest wait between retries.",
        )
        .default("10000"),
        ConfigKey::new(
            "decimal.handling.mode",
            Enum,
            "How numeric values are represented.",
        )
        .default("precise")
        .allowed(&["precise", "double", "string"]),
        ConfigKey::new(
            "time.precision.mode",
            Enum,
            "How time values are represented.",
        )
        .default("adaptive")
        .allowed(&["adaptive", "adaptive_time_microseconds", "connect"]),
        ConfigKey::new(
            "binary.handling.mode",
            Enum,
            "How binary values are represented.",
        )
        .default("bytes")
        .allowed(&["bytes", "base64", "base64-url-safe", "hex"]),
        ConfigKey::new(
            "interval.handling.mode",
            Enum,
            "How intervals are represented.",
        )
        .default("numeric")
        .allowed(&["numeric", "string"]),
        ConfigKey::new(
            "hstore.handling.mode",
            Enum,
            "How hstore values are represented.",
        )
        .default("json")
        .allowed(&["json", "map"]),
        ConfigKey::new("money.fraction.digits", Int, "Scale of money values.").default("2"),
        ConfigKey::new(
            "unavailable.value.placeholder",
            String,
            "Value for unchanged TOASTed columns.",
        )
        .default("__debezium_unavailable_value"),
        ConfigKey::new(
            "include.unknown.datatypes",
            Bool,
            "Emit columns of types Debezium cannot map (box, pg_lsn, multiranges...) as the bytes of their text; false leaves them out, as Debezium does.",
        )
        .default("false"),
        ConfigKey::new(
            "event.converting.failure.handling.mode",
            Enum,
            "A value that cannot be converted (NaN in a precise decimal, a NULL element of an enum array...): fail stops the connector, warn emits null with a warning, skip emits null.",
        )
        .default("warn")
        .allowed(&["fail", "warn", "skip"]),
        ConfigKey::new(
            "extended.headers.enabled",
            Bool,
            "Add the __debezium.context.* headers (connector logical name, task id, connector name, run id) to change events, as Debezium 3.2+ does.",
        )
        .default("true"),
        ConfigKey::new(
            "sluice.debezium.compatibility",
            Enum,
            "The Debezium release whose event format is produced: 3.6 (default) or 2.7.",
        )
        .default("3.6")
        .allowed(&["3.6", "2.7"]),
        ConfigKey::new(
            "sluice.streaming.in.progress",
            Bool,
            "Stream large in-progress transactions (protocol 2, PostgreSQL 14+), spilling to disk.",
        )
        .default("true"),
        ConfigKey::new(
            "sluice.spill.memory.bytes",
            Int,
            "Memory for in-progress transactions before spilling.",
        )
        .default("67108864"),
        ConfigKey::new(
            "sluice.spill.dir",
            String,
            "Directory for spill files (default: the system temp dir).",
        ),
    ])
}

fn regexes(p: &Parsed, key: &str) -> Vec<Regex> {
    p.regexes(key)
}

fn parse_key_columns(v: &str) -> Result<Vec<(Regex, Vec<String>)>, ConfigError> {
    let mut out = Vec::new();
    for part in v.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (table, cols) = part.split_once(':').ok_or_else(|| {
            ConfigError::new(
                "message.key.columns",
                Some(v),
                format!("'{part}' must be '<schema>.<table>:<column>[,<column>...]'"),
            )
        })?;
        let re = Regex::new(&format!("^(?:{})$", table.trim())).map_err(|e| {
            ConfigError::new(
                "message.key.columns",
                Some(v),
                format!("bad table regex '{table}': {e}"),
            )
        })?;
        let cols: Vec<String> = sluice_core::config::split_list(cols);
        if cols.is_empty() {
            return Err(ConfigError::new(
                "message.key.columns",
                Some(v),
                format!("'{part}' names no column"),
            ));
        }
        out.push((re, cols));
    }
    Ok(out)
}

impl PostgresConfig {
    /// Parses and checks a connector config; returns the config and warnings.
    pub fn parse(props: &Props) -> Result<(PostgresConfig, Vec<String>), ConfigErrors> {
        let p = config_def().parse(props, &[])?;
        // Unknown keys are reported by the worker, which knows its own keys.
        let mut warnings: Vec<String> = Vec::new();
        let mut errors = Vec::new();
        let plugin = p.string("plugin.name");
        if plugin != "pgoutput" {
            warnings.push(format!(
                "plugin.name={plugin}: Sluice decodes with pgoutput; the events are the same"
            ));
        }
        for k in ["database.sslcert", "database.sslkey"] {
            if p.get(k).is_some() {
                warnings.push(format!("{k} is not supported yet and is ignored"));
            }
        }
        let snapshot_mode = match p.string("snapshot.mode").as_str() {
            "always" => SnapshotMode::Always,
            "initial_only" => SnapshotMode::InitialOnly,
            "no_data" | "never" => SnapshotMode::NoData,
            "when_needed" => SnapshotMode::WhenNeeded,
            _ => SnapshotMode::Initial,
        };
        let publication_mode = match p.string("publication.autocreate.mode").as_str() {
            "filtered" => PublicationMode::Filtered,
            "disabled" => PublicationMode::Disabled,
            "no_tables" => PublicationMode::NoTables,
            _ => PublicationMode::AllTables,
        };
        let mut skipped = SkippedOps::default();
        for op in p.list("skipped.operations") {
            match op.as_str() {
                "c" => skipped.create = true,
                "u" => skipped.update = true,
                "d" => skipped.delete = true,
                "t" => skipped.truncate = true,
                "none" => {}
                other => errors.push(ConfigError::new(
                    "skipped.operations",
                    Some(other),
                    "Allowed values are: c, u, d, t, none",
                )),
            }
        }
        let port = p.int("database.port");
        if !(1..=65535).contains(&port) {
            errors.push(ConfigError::new(
                "database.port",
                p.get("database.port"),
                "Must be a port number between 1 and 65535",
            ));
        }
        let positive = |key: &str, errors: &mut Vec<ConfigError>| {
            let v = p.int(key);
            if v <= 0 {
                errors.push(ConfigError::new(
                    key,
                    p.get(key),
                    "Must be a positive integer",
                ));
            }
            v.max(1)
        };
        let max_batch_size = positive("max.batch.size", &mut errors) as usize;
        let snapshot_fetch_size = positive("snapshot.fetch.size", &mut errors) as usize;
        let positive_chunk = positive("sluice.snapshot.chunk.blocks", &mut errors) as u64;
        let status_ms = positive("status.update.interval.ms", &mut errors);
        let slot_monitor_ms = positive("slot.monitor.interval.ms", &mut errors);
        let slot_warn_bytes = p.int("slot.retained.wal.warn.bytes");
        if slot_warn_bytes < 0 {
            errors.push(ConfigError::new(
                "slot.retained.wal.warn.bytes",
                p.get("slot.retained.wal.warn.bytes"),
                "Must be 0 (never warn) or a number of bytes",
            ));
        }
        let hb = p.int("heartbeat.interval.ms");
        if hb < 0 {
            errors.push(ConfigError::new(
                "heartbeat.interval.ms",
                p.get("heartbeat.interval.ms"),
                "Must be 0 (off) or a positive number of milliseconds",
            ));
        }
        let snapshot_threads = match p.get("snapshot.max.threads") {
            Some(_) => positive("snapshot.max.threads", &mut errors) as usize,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(2, 8),
        };
        let message_key_columns = match p.get("message.key.columns") {
            Some(v) => parse_key_columns(v).unwrap_or_else(|e| {
                errors.push(e);
                Vec::new()
            }),
            None => Vec::new(),
        };
        let type_modes = sluice_pgtypes::TypeModes::from_props(|k| p.get(k).map(str::to_owned))
            .unwrap_or_else(|e| {
                errors.push(ConfigError::new("decimal.handling.mode", None, e));
                sluice_pgtypes::TypeModes::default()
            });
        let format =
            sluice_core::debezium::Format::parse(&p.string("sluice.debezium.compatibility"))
                .unwrap_or_default();
        let failure_mode = match p.string("event.converting.failure.handling.mode").as_str() {
            "fail" => FailureMode::Fail,
            "skip" => FailureMode::Skip,
            _ => FailureMode::Warn,
        };
        let sslmode = SslMode::parse(&p.string("database.sslmode")).unwrap_or(SslMode::Prefer);
        if matches!(sslmode, SslMode::VerifyCa | SslMode::VerifyFull) {
            if let Some(path) = p.get("database.sslrootcert") {
                if !std::path::Path::new(path).is_file() {
                    errors.push(ConfigError::new(
                        "database.sslrootcert",
                        Some(path),
                        "Must be a readable PEM file of trusted root certificates",
                    ));
                }
            }
        }
        let signal_table = match p.get("signal.data.collection") {
            None => None,
            Some(v) => match v.trim().split_once('.') {
                Some((schema, table)) if !schema.is_empty() && !table.is_empty() => Some(TableId {
                    schema: schema.trim_matches('"').to_string(),
                    table: table.trim_matches('"').to_string(),
                }),
                _ => {
                    errors.push(ConfigError::new(
                        "signal.data.collection",
                        Some(v),
                        "must name the signal table as schema.table (for example public.debezium_signal)",
                    ));
                    None
                }
            },
        };
        let channels = p.list("signal.enabled.channels");
        let signal_source_channel = channels.iter().any(|c| c == "source");
        for c in &channels {
            match c.as_str() {
                // Read by the worker beside the task (its signal channel).
                "source" | "kafka" => {}
                "jmx" | "file" | "in-process" => warnings.push(format!(
                    "signal.enabled.channels: the {c} channel is not supported yet and is ignored; \
                     use the signal table (source), kafka, or the worker's POST /connectors/{{name}}/signals"
                )),
                other => errors.push(ConfigError::new(
                    "signal.enabled.channels",
                    Some(other),
                    "unknown signal channel: expected source or kafka",
                )),
            }
        }
        let incremental_chunk_size = p.int("incremental.snapshot.chunk.size");
        if incremental_chunk_size < 1 {
            errors.push(ConfigError::new(
                "incremental.snapshot.chunk.size",
                Some(&incremental_chunk_size.to_string()),
                "must be at least 1",
            ));
        }
        let incremental_chunk_size = incremental_chunk_size.max(1) as usize;
        let password = p
            .get("database.password")
            .map(str::to_owned)
            .or_else(|| std::env::var("PGPASSWORD").ok());
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let name = props
            .get("name")
            .cloned()
            .unwrap_or_else(|| "postgres".into());
        let cfg = PostgresConfig {
            conn: ConnParams {
                host: p.string("database.hostname"),
                port: port as u16,
                user: p.string("database.user"),
                password,
                dbname: p.string("database.dbname"),
                sslmode,
                sslrootcert: p.get("database.sslrootcert").map(str::to_owned),
                connect_timeout: Duration::from_millis(
                    p.int("database.connect.timeout.ms").max(1) as u64
                ),
                application_name: format!("sluice:{name}"),
            },
            name,
            prefix: p.string("topic.prefix"),
            plugin_name: plugin,
            slot_name: p.string("slot.name"),
            slot_drop_on_stop: p.bool("slot.drop.on.stop"),
            publication_name: p.string("publication.name"),
            publication_mode,
            snapshot_mode,
            snapshot_threads,
            snapshot_fetch_size,
            snapshot_chunk_blocks: positive_chunk,
            table_include: regexes(&p, "table.include.list"),
            table_exclude: regexes(&p, "table.exclude.list"),
            schema_include: regexes(&p, "schema.include.list"),
            schema_exclude: regexes(&p, "schema.exclude.list"),
            column_include: regexes(&p, "column.include.list"),
            column_exclude: regexes(&p, "column.exclude.list"),
            message_key_columns,
            message_prefix_include: regexes(&p, "message.prefix.include.list"),
            message_prefix_exclude: regexes(&p, "message.prefix.exclude.list"),
            tombstones_on_delete: p.bool("tombstones.on.delete"),
            skipped,
            transaction_metadata: p.bool("provide.transaction.metadata"),
            heartbeat_interval: (hb > 0).then(|| Duration::from_millis(hb as u64)),
            heartbeat_action_query: p.get("heartbeat.action.query").map(str::to_owned),
            heartbeat_topics_prefix: p.string("heartbeat.topics.prefix"),
            max_batch_size,
            signal_table,
            signal_source_channel,
            incremental_chunk_size,
            read_only: p.bool("read.only"),
            status_interval: Duration::from_millis(status_ms as u64),
            slot_warn_bytes: slot_warn_bytes.max(0),
            slot_monitor_interval: Duration::from_millis(slot_monitor_ms as u64),
            max_retries: p.int("errors.max.retries"),
            retry_max_wait: Duration::from_millis(
                p.int("retriable.restart.connector.wait.ms").max(100) as u64,
            ),
            stream_in_progress: p.bool("sluice.streaming.in.progress"),
            spill_memory_bytes: p.int("sluice.spill.memory.bytes").max(1 << 20) as usize,
            spill_dir: p.get("sluice.spill.dir").map(str::to_owned),
            type_modes,
            format,
            failure_mode,
            context_headers: p.bool("extended.headers.enabled")
                && format == sluice_core::debezium::Format::V3_6,
            run_id: crate::events::new_run_id(),
        };
        for (alias, canon) in &p.aliases_used {
            tracing::debug!("'{alias}' is the older name of '{canon}'");
        }
        Ok((cfg, warnings))
    }

    /// Whether `schema.table` is captured.
    pub fn table_included(&self, schema: &str, table: &str) -> bool {
        if matches!(schema, "pg_catalog" | "information_schema") || schema.starts_with("pg_toast") {
            return false;
        }
        if !self.schema_include.is_empty()
            && !self.schema_include.iter().any(|r| r.is_match(schema))
        {
            return false;
        }
        if self.schema_exclude.iter().any(|r| r.is_match(schema)) {
            return false;
        }
        let full = format!("{schema}.{table}");
        if !self.table_include.is_empty() && !self.table_include.iter().any(|r| r.is_match(&full)) {
            return false;
        }
        !self.table_exclude.iter().any(|r| r.is_match(&full))
    }

    /// The position in `table.include.list` of the first pattern that
    /// matches `schema.table` (0 without a list).
    pub fn include_rank(&self, schema: &str, table: &str) -> usize {
        let full = format!("{schema}.{table}");
        self.table_include
            .iter()
            .position(|r| r.is_match(&full))
            .unwrap_or(0)
    }

    /// Whether column `schema.table.column` is captured.
    pub fn column_included(&self, schema: &str, table: &str, column: &str) -> bool {
        if self.column_include.is_empty() && self.column_exclude.is_empty() {
            return true;
        }
        let full = format!("{schema}.{table}.{column}");
        if !self.column_include.is_empty() && !self.column_include.iter().any(|r| r.is_match(&full))
        {
            return false;
        }
        !self.column_exclude.iter().any(|r| r.is_match(&full))
    }

    /// Whether logical decoding messages with `prefix` are captured.
    pub fn message_prefix_included(&self, prefix: &str) -> bool {
        if !self.message_prefix_include.is_empty() {
            return self
                .message_prefix_include
                .iter()
                .any(|r| r.is_match(prefix));
        }
        !self
            .message_prefix_exclude
            .iter()
            .any(|r| r.is_match(prefix))
    }

    /// The key columns named by `message.key.columns` for a table.
    pub fn key_columns_for(&self, schema: &str, table: &str) -> Option<&[String]> {
        let full = format!("{schema}.{table}");
        self.message_key_columns
            .iter()
            .find(|(r, _)| r.is_match(&full))
            .map(|(_, c)| c.as_slice())
    }

    /// The source partition `{"server": <prefix>}`.
    pub fn partition(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert(
            "server".into(),
            serde_json::Value::String(self.prefix.clone()),
        );
        m
    }
}
