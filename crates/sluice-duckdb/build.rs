//! Finds the official shared libduckdb (1.5.x) that the `duckdb` crate links
//! against, installing it with npm when it is missing, and tells the linker
//! where it is — for linking and, through an rpath, for run time.
//!
//! The library comes from the npm package `@duckdb/node-bindings-linux-x64`
//! (DuckDB's own release build): building DuckDB from source takes most of an
//! hour and the crate's download feature needs GitHub. `DUCKDB_LIB_DIR`
//! overrides the location.

use std::path::{Path, PathBuf};
use std::process::Command;

const NPM_PACKAGE: &str = "@duckdb/node-bindings-linux-x64@1.5.6-r.1";
const NPM_DIR: &str = "node_modules/@duckdb/node-bindings-linux-x64";

fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    println!("cargo:rerun-if-env-changed=SLUICE_DUCKDB_PREFIX");
    println!("cargo:rerun-if-changed=build.rs");
    let dir = match std::env::var_os("DUCKDB_LIB_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let prefix = prefix();
            let dir = prefix.join(NPM_DIR);
            if !dir.join("libduckdb.so").is_file() {
                install(&prefix);
            }
            dir
        }
    };
    if !dir.join("libduckdb.so").is_file() {
        panic!(
            "libduckdb.so is not in {}: run `npm install --prefix {} {NPM_PACKAGE}` or set DUCKDB_LIB_DIR",
            dir.display(),
            prefix().display()
        );
    }
    let dir = dir.canonicalize().unwrap_or(dir);
    let shown = dir.display();
    // libduckdb-sys asks for `-l duckdb` without a search path when
    // DUCKDB_LIB_DIR is unset; this search path reaches every final link.
    println!("cargo:rustc-link-search=native={shown}");
    // This package's own tests and examples.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{shown}");
    // For dependents' build scripts (DEP_SLUICE_DUCKDB_LIB_DIR).
    println!("cargo:lib_dir={shown}");
    println!(
        "cargo:rerun-if-changed={}",
        dir.join("libduckdb.so").display()
    );
}

/// Where the npm package is installed: `$SLUICE_DUCKDB_PREFIX`, else
/// `$HOME/.cache/sluice-duckdb`.
fn prefix() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_DUCKDB_PREFIX") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    Path::new(&home).join(".cache").join("sluice-duckdb")
}

fn install(prefix: &Path) {
    if let Err(e) = std::fs::create_dir_all(prefix) {
        panic!("creating {}: {e}", prefix.display());
    }
    let status = Command::new("npm")
        .arg("install")
        .arg("--no-save")
        .arg("--no-audit")
        .arg("--no-fund")
        .arg("--prefix")
        .arg(prefix)
        .arg(NPM_PACKAGE)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "`npm install --prefix {} {NPM_PACKAGE}` failed ({s}); install libduckdb.so 1.5.x and set DUCKDB_LIB_DIR",
            prefix.display()
        ),
        Err(e) => panic!(
            "running npm to install {NPM_PACKAGE} into {}: {e}; install npm, or libduckdb.so 1.5.x and set DUCKDB_LIB_DIR",
            prefix.display()
        ),
    }
}
