//! Gives this crate's tests an rpath to the shared libduckdb that
//! sluice-duckdb (a dev-dependency) finds or installs, so they run without
//! `LD_LIBRARY_PATH`. The location follows sluice-duckdb's build script:
//! `DUCKDB_LIB_DIR`, else the npm package under `$SLUICE_DUCKDB_PREFIX` or
//! `$HOME/.cache/sluice-duckdb`. Binaries that use this crate get their
//! rpath from their own build (as the `sluice` binary does).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    println!("cargo:rerun-if-env-changed=SLUICE_DUCKDB_PREFIX");
    println!("cargo:rerun-if-changed=build.rs");
    let dir = match std::env::var_os("DUCKDB_LIB_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let prefix = match std::env::var_os("SLUICE_DUCKDB_PREFIX") {
                Some(p) => PathBuf::from(p),
                None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                    .join(".cache")
                    .join("sluice-duckdb"),
            };
            prefix.join("node_modules/@duckdb/node-bindings-linux-x64")
        }
    };
    println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{}", dir.display());
}
