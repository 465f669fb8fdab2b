//! Lets the `sluice` binary find libduckdb.so wherever it is installed, and
//! records the git commit it was built from for `sluice version`.
//!
//! `sluice-duckdb`'s build script copies libduckdb.so into the profile's
//! output directory (`target/release/`), next to this binary. The rpath is
//! relative to the binary (`$ORIGIN`), never the build's cache, so the pair
//! can be moved or installed together: `bin/sluice` with `bin/libduckdb.so`,
//! or with `lib/libduckdb.so` (`$ORIGIN/../lib`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // cargo, rustc and the linker are run without a shell, so `$ORIGIN`
    // reaches the linker as written.
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN:$ORIGIN/../lib");
    // Integration tests are built into deps/, one level below the copy.
    println!("cargo:rustc-link-arg-tests=-Wl,-rpath,$ORIGIN/..");
    if std::env::var_os("DEP_SLUICE_DUCKDB_LIB_DIR").is_none() {
        println!("cargo:warning=sluice-duckdb did not say where libduckdb.so was copied");
    }

    println!("cargo:rerun-if-env-changed=SLUICE_GIT_COMMIT");
    let commit = match std::env::var("SLUICE_GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => git_commit().unwrap_or_else(|| "unknown".to_string()),
    };
    println!("cargo:rustc-env=SLUICE_GIT_COMMIT={commit}");
}

/// The checked-out commit (12 hex digits). `None` outside a git checkout (a
/// source tarball: set `SLUICE_GIT_COMMIT` instead). Uncommitted changes
/// are not flagged: this script does not rerun when a source file is
/// edited, so such a flag would go stale.
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // Rerun when HEAD moves: a checkout changes HEAD, a commit the branch
    // ref (loose, or packed by `git gc`).
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from) {
        watch(&git_dir.join("HEAD"));
        if let Some(common) = git(&["rev-parse", "--git-common-dir"]).map(PathBuf::from) {
            let common = if common.is_absolute() {
                common
            } else {
                // Relative to the crate, where the command ran.
                std::env::current_dir().map(|d| d.join(&common)).ok()?
            };
            watch(&common.join("packed-refs"));
            if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
                watch(&common.join(r));
            }
        }
    }
    Some(commit)
}

fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
