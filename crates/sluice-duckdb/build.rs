//! Finds the official shared libduckdb (1.5.x) that the `duckdb` crate links
//! against, installing it with npm when it is missing, and copies it into the
//! profile's output directory (`target/release/`), next to the binaries.
//!
//! The library comes from the npm package `@duckdb/node-bindings-linux-x64`
//! (DuckDB's own release build): building DuckDB from source takes most of an
//! hour and the crate's download feature needs GitHub. `DUCKDB_LIB_DIR`
//! overrides the location.
//!
//! Binaries find the copy through a `$ORIGIN`-relative rpath rather than the
//! path where the library was found: a binary that points into a build
//! cache stops starting (exit 127) as soon as that cache moves, and cannot
//! be installed anywhere else. The copy next to the binary travels with it.

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
            if !dir.join(LIB).is_file() {
                install(&prefix);
            }
            dir
        }
    };
    if !dir.join(LIB).is_file() {
        panic!(
            "libduckdb.so is not in {}: run `npm install --prefix {} {NPM_PACKAGE}` or set DUCKDB_LIB_DIR",
            dir.display(),
            prefix().display()
        );
    }
    let dir = dir.canonicalize().unwrap_or(dir);
    let found = dir.join(LIB);
    println!("cargo:rerun-if-changed={}", found.display());

    let out_dir = profile_dir();
    let copy = out_dir.join(LIB);
    if let Err(e) = copy_if_changed(&found, &copy) {
        panic!("copying {} to {}: {e}", found.display(), copy.display());
    }
    // A deleted copy (e.g. `rm target/release/libduckdb.so`) reruns this.
    println!("cargo:rerun-if-changed={}", copy.display());
    let shown = out_dir.display();
    // libduckdb-sys asks for `-l duckdb` without a search path when
    // DUCKDB_LIB_DIR is unset; this search path reaches every final link.
    // Being inside the target directory, it is also on the library path
    // cargo gives `cargo run`, `cargo test` and doctests.
    println!("cargo:rustc-link-search=native={shown}");
    // This package's tests and examples live one level down (deps/,
    // examples/) from the copy.
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/..");
    // For dependents' build scripts (DEP_SLUICE_DUCKDB_LIB_DIR): where the
    // copy is.
    println!("cargo:lib_dir={shown}");
}

/// The library's file name.
const LIB: &str = "libduckdb.so";

/// The profile's output directory, where cargo puts the final binaries:
/// `OUT_DIR` is `<target-dir>/[<triple>/]<profile>/build/<pkg>-<hash>/out`,
/// and build scripts are told nothing closer. (A `build-dir` set apart from
/// the target directory would put the copy there instead; the binaries would
/// then need the library copied next to them by hand.)
fn profile_dir() -> PathBuf {
    let out = PathBuf::from(
        std::env::var_os("OUT_DIR")
            .unwrap_or_else(|| panic!("OUT_DIR is not set: this build script runs under cargo")),
    );
    let build = out.ancestors().nth(2);
    match (build, out.ancestors().nth(3)) {
        (Some(b), Some(profile)) if b.file_name().is_some_and(|n| n == "build") => {
            profile.to_path_buf()
        }
        _ => panic!(
            "OUT_DIR {} is not <profile>/build/<package>/out: cannot tell where the binaries go",
            out.display()
        ),
    }
}

/// Copies `from` to `to` unless `to` already has the same bytes. The new
/// file is renamed into place, so a process running with the old copy
/// mapped keeps its (unlinked) file instead of crashing on changed pages.
fn copy_if_changed(from: &Path, to: &Path) -> std::io::Result<()> {
    if same_contents(from, to)? {
        return Ok(());
    }
    let tmp = to.with_extension(format!("so.{}.tmp", std::process::id()));
    std::fs::copy(from, &tmp)?;
    std::fs::rename(&tmp, to).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn same_contents(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (ma, mb) = match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(ma), Ok(mb)) => (ma, mb),
        (Err(e), _) => return Err(e),
        (Ok(_), Err(_)) => return Ok(false),
    };
    if ma.len() != mb.len() {
        return Ok(false);
    }
    Ok(std::fs::read(a)? == std::fs::read(b)?)
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
