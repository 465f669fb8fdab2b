//! `sluice`: change-data-capture in one binary. `sluice connect` runs Kafka
//! Connect's standalone mode with Sluice's built-in connectors.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod dashboard;
mod datagen;
mod demo;
mod kql;
mod live;
mod logging;
mod query;
mod status;
mod version;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use sluice_connect::config_files::{self, ConnectorFile};
use sluice_connect::rest::{RestConfig, RestServer};
use sluice_connect::{Registry, Worker, WorkerError};
use sluice_core::config::Props;
use sluice_core::connector::ConnectorPlugin;
use tokio_util::sync::CancellationToken;

/// Records are allocated by a source's thread and freed by a sink's: an
/// allocator with per-thread free lists keeps that off a shared lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Caps glibc malloc at two arenas. By default glibc gives each thread that
/// allocates an arena of its own; with events built on one thread and freed
/// on another, the process held 2.5x the memory while streaming (126 vs 51
/// MiB peak) and ran slower (100k vs 146k rows/s), measured with
/// `bench/file-throughput.sh 300000`. It must run before other threads start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only changes allocator tuning; it is called once, from
    // main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// mimalloc 3's `mi_option_purge_delay` (not among the crate's constants).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// mimalloc 3's default purge delay (ms), which identifies the option.
const MI_DEFAULT_PURGE_DELAY: std::os::raw::c_long = 1000;
/// How long freed memory stays with the process before it is returned.
const PURGE_DELAY_MS: std::os::raw::c_long = 100;

/// Returns freed memory to the system after 100 ms rather than mimalloc
/// 3's 1 s. Events are allocated and freed at a high rate, and a second's
/// worth of freed pages stayed resident: with 100 ms, peak RSS over
/// 1,000,000 rows or changes (`bench/run --only snapshot,streaming`, the
/// delay set through the environment for one of two binaries) went from
/// about 112 to 89 MiB for the snapshot to the null sink, 112 to 80 MiB
/// for streaming to it, 205 to 168 MiB for the snapshot into DuckDB, CPU
/// time per row within the runs' noise; 10 ms cut a little more and cost
/// 15% more CPU. `MIMALLOC_PURGE_DELAY` in the environment still decides.
#[allow(unsafe_code)]
fn shorten_purge_delay() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: reading and setting an allocator option is thread-safe and
    // changes only when freed memory is returned. The option is set only
    // where it holds mimalloc 3's purge delay default, so another layout
    // of the options is left alone.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == MI_DEFAULT_PURGE_DELAY {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
}

/// Exit code for a clean stop.
const EXIT_OK: u8 = 0;
/// Exit code when a task failed (or the runtime could not keep going).
const EXIT_TASK_FAILED: u8 = 1;
/// Exit code for invalid configuration (every error is printed).
const EXIT_BAD_CONFIG: u8 = 2;

/// Where offsets go when no worker config names a file.
const DEFAULT_OFFSET_FILE: &str = "./sluice.offsets";

/// The connector plugins this binary offers. Source plugins are registered
/// here (e.g. the PostgreSQL source's `sluice_postgres::plugin()`).
fn plugins() -> Vec<Arc<dyn ConnectorPlugin>> {
    vec![
        // Sinks.
        sluice_connect::file_sink::plugin(),
        sluice_connect::null_sink::plugin(),
        sluice_duckdb::plugin(),
        sluice_kusto::plugin(),
        // Sources.
        sluice_postgres::plugin(),
    ]
}

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Change-data-capture in a single binary: Kafka Connect's runtime, connectors and transport in one process."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// The subcommands' one-line `about`s are attributes, not doc comments: a
// doc comment on a variant also sets `long_about` (to nothing when it is one
// paragraph), after and over the `long_about` of the variant's arguments
// struct, and `--help` then never showed the long help written there.
#[derive(Debug, Subcommand)]
enum Command {
    #[command(
        about = "Prints the version, the git commit and the DuckDB library in use",
        long_about = "Prints Sluice's version, the git commit it was built from, and the \
version of the DuckDB library it runs with and the file it was loaded from: the \
libduckdb.so next to the binary (or in ../lib), which must travel with it.\n\n\
Exit codes: 0, or 1 when DuckDB cannot be opened."
    )]
    Version,
    #[command(about = "Runs a Kafka Connect worker: standalone, or distributed with group.id")]
    Connect(ConnectArgs),
    #[command(
        about = "Shows Sluice end to end: a throwaway PostgreSQL, live changes, captured and verified"
    )]
    Demo(demo::DemoArgs),
    #[command(
        about = "Generates the reference scenario's orders: one insert every 3 s, or a chosen rate and mix of changes"
    )]
    Datagen(datagen::DatagenArgs),
    #[command(
        about = "Runs SQL or KQL (--kql) against a DuckDB file, or KQL on an ADX cluster, and prints the result (table, CSV or JSON) and its chart"
    )]
    Query(query::QueryArgs),
    #[command(about = "Prints a running worker's connectors and tasks: state, worker, errors")]
    Status(status::StatusArgs),
}

#[derive(Debug, Args)]
#[command(
    override_usage = "sluice connect [WORKER_CONFIG] CONNECTOR_CONFIG...\n       sluice connect DISTRIBUTED_WORKER_CONFIG [CONNECTOR_CONFIG...]",
    long_about = "Runs connectors in Kafka Connect's standalone mode, like \
`connect-standalone worker.properties connector1.properties ...`, or, when \
the worker config has group.id (with bootstrap.servers, config.storage.topic, \
offset.storage.topic and status.storage.topic), as a worker of a distributed \
cluster like `connect-distributed worker.properties`: connectors are managed \
through the REST API and kept in the config topic, and the workers of a group \
share their tasks. Connector files given to a distributed worker are added \
to the group when it does not have them yet.\n\n\
WORKER_CONFIG is a worker configuration (.properties or a flat .json object) \
with Kafka Connect's keys: offset.storage.file.filename, key.converter, \
value.converter (and their key.converter.* / value.converter.* options), \
offset.flush.interval.ms, ... Without bootstrap.servers, records flow from \
sources to sinks inside this process. The first file is taken as the worker \
config when it has neither connector.class nor name and more files follow; \
otherwise worker defaults apply and offsets go to ./sluice.offsets.\n\n\
Each CONNECTOR_CONFIG is a .properties file with name= and connector.class=, \
or a .json file in the form of POST /connectors ({\"name\": ..., \"config\": {...}}) \
or flat with \"name\".\n\n\
All configuration errors are reported before anything starts. SIGINT or \
SIGTERM stops the sources, drains their records into the sinks, flushes the \
sinks and commits offsets.\n\n\
Exit codes: 0 clean stop, 1 task failure, 2 invalid configuration.\n\n\
Logs go to standard error, filtered by RUST_LOG (default info): text, coloured \
only on a terminal (and without NO_COLOR), or with --log-format json (or \
SLUICE_LOG_FORMAT=json) one JSON object per line with timestamp, level, \
message, target and the event's fields."
)]
struct ConnectArgs {
    /// [WORKER_CONFIG] CONNECTOR_CONFIG...
    #[arg(required = true, value_name = "CONFIG")]
    files: Vec<PathBuf>,
    /// Log lines as text or json (one object per line); default $SLUICE_LOG_FORMAT, else text.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<logging::LogFormat>,
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    shorten_purge_delay();
    let cli = Cli::parse();
    match cli.command {
        Command::Version => ExitCode::from(version::run()),
        Command::Connect(args) => match logging::resolve(args.log_format) {
            Ok(format) => {
                logging::init(format, "info");
                sluice_connect::runtime::progress::show_progress_bars(
                    format == logging::LogFormat::Text && std::io::stderr().is_terminal(),
                );
                ExitCode::from(connect(&args.files))
            }
            Err(e) => {
                eprintln!("sluice: {e}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        },
        Command::Demo(args) => ExitCode::from(demo::run(&args, plugins())),
        Command::Datagen(args) => ExitCode::from(datagen::main(&args)),
        Command::Query(args) => ExitCode::from(query::run(&args)),
        Command::Status(args) => ExitCode::from(status::run(&args)),
    }
}

/// Splits the command line's files into worker props and connector configs,
/// collecting every error.
fn load_configs(files: &[PathBuf]) -> Result<(Props, Vec<ConnectorFile>), Vec<String>> {
    let mut errors = Vec::new();
    let loaded: Vec<(&Path, Option<Props>)> = files
        .iter()
        .map(|f| match config_files::load_props(f) {
            Ok(p) => (f.as_path(), Some(p)),
            Err(e) => {
                errors.push(e.to_string());
                (f.as_path(), None)
            }
        })
        .collect();
    // A lone worker config is distributed mode's usual command line, and
    // standalone's too when connectors come through the REST API.
    let first_is_worker = loaded[0]
        .1
        .as_ref()
        .is_some_and(|p| !config_files::looks_like_connector(p));
    let (mut worker, connectors) = if first_is_worker {
        (loaded[0].1.clone().unwrap_or_default(), &loaded[1..])
    } else {
        (Props::new(), &loaded[..])
    };
    if !first_is_worker {
        tracing::info!(
            "no worker config given: using worker defaults, offsets in {DEFAULT_OFFSET_FILE}"
        );
        worker.insert(
            "offset.storage.file.filename".to_string(),
            DEFAULT_OFFSET_FILE.to_string(),
        );
    }
    let mut out = Vec::new();
    for (path, props) in connectors {
        let Some(props) = props else { continue };
        match props.get("name") {
            Some(n) if !n.trim().is_empty() => out.push(ConnectorFile {
                path: path.to_path_buf(),
                props: props.clone(),
            }),
            _ => errors.push(format!(
                "{}: Configuration 'name': a connector config must set the connector's name",
                path.display()
            )),
        }
    }
    if errors.is_empty() {
        Ok((worker, out))
    } else {
        Err(errors)
    }
}

fn print_config_errors(errors: &[String]) {
    eprintln!(
        "sluice: invalid configuration ({} error{}):",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    for e in errors {
        eprintln!("  - {e}");
    }
}

fn connect(files: &[PathBuf]) -> u8 {
    let (worker_props, connectors) = match load_configs(files) {
        Ok(c) => c,
        Err(errors) => {
            print_config_errors(&errors);
            return EXIT_BAD_CONFIG;
        }
    };
    let registry = Registry::new(plugins());
    // REST key errors are reported together with every other config error.
    let rest = RestConfig::from_props(&worker_props).map_err(|e| format!("worker: {e}"));
    let worker = match (Worker::new(&registry, &worker_props, &connectors), &rest) {
        (Ok(w), Ok(_)) => w,
        (Err(WorkerError::Config(report)), rest) => {
            let mut errors = report.errors;
            errors.extend(rest.as_ref().err().cloned());
            print_config_errors(&errors);
            return EXIT_BAD_CONFIG;
        }
        (Ok(_), Err(e)) => {
            print_config_errors(std::slice::from_ref(e));
            return EXIT_BAD_CONFIG;
        }
        (Err(e), _) => {
            eprintln!("sluice: {e}");
            return EXIT_TASK_FAILED;
        }
    };
    let Ok(rest) = rest else {
        return EXIT_BAD_CONFIG;
    };
    // A listener the user chose must be served; the default one is a
    // convenience that another worker on this host may already hold.
    let rest_chosen = ["listeners", "rest.port", "rest.host.name"]
        .iter()
        .any(|k| worker_props.contains_key(*k));
    let mut worker = worker;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: starting the async runtime: {e}");
            return EXIT_TASK_FAILED;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        // Listen before anything starts, so an early signal is an orderly
        // stop rather than the default (immediate) termination.
        use tokio::signal::unix::{signal, SignalKind};
        let signals = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        );
        tokio::spawn(watch_signals(shutdown.clone(), signals));
        if let Some(bind) = rest.metrics_bind.clone() {
            match tokio::net::TcpListener::bind(&bind).await {
                Ok(listener) => {
                    let (handle, stop) = (worker.handle(), shutdown.clone());
                    tokio::spawn(async move {
                        if let Err(e) =
                            sluice_connect::rest::serve_metrics(listener, handle, stop).await
                        {
                            tracing::error!("metrics listener stopped: {e}");
                        }
                    });
                }
                Err(e) => {
                    eprintln!("sluice: metrics listener {bind}: cannot listen: {e} (worker key 'metrics.listeners')");
                    return EXIT_BAD_CONFIG;
                }
            }
        }
        let bound = if rest.enabled {
            Some(RestServer::bind(rest).await)
        } else {
            tracing::info!("running without the REST API (sluice.rest.enabled=false)");
            None
        };
        match bound {
            None => {}
            Some(Ok(server)) => {
                // Failed tasks can be restarted through the API: the
                // worker keeps running whatever fails.
                worker.set_stop_on_task_failure(false);
                if let Ok(id) = server.worker_id() {
                    worker.set_worker_id(id);
                }
                // Queries on the DuckDB files this worker's sinks hold.
                if let Ok(addr) = server.local_addr() {
                    let host = if addr.ip().is_unspecified() {
                        std::net::IpAddr::from([127, 0, 0, 1])
                    } else {
                        addr.ip()
                    };
                    let url = format!("http://{}", std::net::SocketAddr::new(host, addr.port()));
                    sluice_duckdb::stores::set_endpoint(Some(url));
                }
                let dashboard_file = worker_props
                    .get("sluice.dashboard.file")
                    .map(std::path::PathBuf::from);
                let server = server
                    .with_routes(live::routes())
                    .with_routes(dashboard::routes(dashboard_file));
                let handle = worker.handle();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(e) = server.serve(handle, stop).await {
                        tracing::error!("REST API stopped: {e}");
                    }
                });
            }
            Some(Err(e)) if rest_chosen => {
                eprintln!("sluice: {e} (worker key 'listeners')");
                return EXIT_BAD_CONFIG;
            }
            Some(Err(e)) => {
                tracing::warn!("{e}; running without the REST API (set 'listeners' to choose another address, e.g. http://127.0.0.1:0)");
            }
        }
        let ran = worker.run(shutdown).await;
        sluice_duckdb::stores::set_endpoint(None);
        match ran {
            Ok(()) => EXIT_OK,
            Err(e) => {
                eprintln!("sluice: {e}");
                EXIT_TASK_FAILED
            }
        }
    })
}

/// First SIGINT/SIGTERM: orderly stop. Second: give up at once.
async fn watch_signals(
    shutdown: CancellationToken,
    signals: (
        std::io::Result<tokio::signal::unix::Signal>,
        std::io::Result<tokio::signal::unix::Signal>,
    ),
) {
    let (mut int, mut term) = match signals {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cannot listen for SIGINT/SIGTERM: {e}; stop with SIGKILL");
            return;
        }
    };
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        seen += 1;
        if seen == 1 {
            tracing::info!("signal received: stopping (send again to exit at once)");
            shutdown.cancel();
        } else {
            tracing::warn!("second signal: exiting without finishing the orderly stop");
            std::process::exit(i32::from(EXIT_TASK_FAILED));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn freed_memory_is_returned_after_100_ms_unless_the_environment_says_otherwise() {
        shorten_purge_delay();
        // SAFETY: reading an allocator option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        match std::env::var("MIMALLOC_PURGE_DELAY") {
            Ok(v) => assert_eq!(delay.to_string(), v),
            Err(_) => assert_eq!(delay, PURGE_DELAY_MS),
        }
    }
}
