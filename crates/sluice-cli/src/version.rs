//! `sluice version`: what was built (version, commit) and which DuckDB
//! library it runs with, and from where — the first thing to ask of a
//! binary copied to another machine.

/// Prints the version lines; 1 when DuckDB cannot be used.
pub fn run() -> u8 {
    println!("sluice {}", env!("CARGO_PKG_VERSION"));
    println!("commit: {}", env!("SLUICE_GIT_COMMIT"));
    match duckdb_version() {
        Ok(v) => {
            match loaded_library("libduckdb") {
                Some(path) => println!("duckdb: {v}, loaded from {path}"),
                None => println!("duckdb: {v}"),
            }
            0
        }
        Err(e) => {
            println!("duckdb: unavailable");
            eprintln!("sluice: opening an in-memory DuckDB database failed: {e}");
            1
        }
    }
}

/// The linked DuckDB's version and source id, e.g. `v1.5.2 (source 8ad8e5bd2b)`,
/// asked from the library itself rather than from the crate's version.
fn duckdb_version() -> Result<String, duckdb::Error> {
    let conn = duckdb::Connection::open_in_memory()?;
    conn.query_row(
        "SELECT library_version, source_id FROM pragma_version()",
        [],
        |r| {
            let version: String = r.get(0)?;
            let source: String = r.get(1)?;
            Ok(format!("{version} (source {source})"))
        },
    )
}

/// The path of the mapped shared object whose file name starts with
/// `name`, from `/proc/self/maps` (Linux); `None` elsewhere.
fn loaded_library(name: &str) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        // address perms offset dev inode path
        .filter_map(|l| l.splitn(6, ' ').nth(5))
        .map(str::trim)
        .find(|p| {
            std::path::Path::new(p)
                .file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(name))
        })
        .map(str::to_string)
}
