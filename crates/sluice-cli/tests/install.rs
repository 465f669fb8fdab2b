//! The built binary is self-contained with the libduckdb.so beside it: it
//! finds DuckDB through a `$ORIGIN`-relative rpath, so the pair runs from
//! anywhere once copied, and nothing points into the build's caches.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn built_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `readelf -d` of a file: (RUNPATH/RPATH entries, NEEDED libraries).
fn dynamic_section(file: &Path) -> (Vec<String>, Vec<String>) {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(file)
        .output()
        .expect("run readelf (binutils)");
    assert!(out.status.success(), "readelf: {}", text(&out.stderr));
    let bracketed = |line: &str| -> Option<String> {
        let start = line.find('[')? + 1;
        let end = line.rfind(']')?;
        Some(line[start..end].to_string())
    };
    let mut paths = Vec::new();
    let mut needed = Vec::new();
    for line in text(&out.stdout).lines() {
        if line.contains("(RUNPATH)") || line.contains("(RPATH)") {
            let v = bracketed(line).expect("runpath value");
            paths.extend(v.split(':').map(str::to_string));
        } else if line.contains("(NEEDED)") {
            needed.push(bracketed(line).expect("needed value"));
        }
    }
    (paths, needed)
}

/// Runs an installed copy as a user elsewhere would: another working
/// directory, an empty HOME (no build caches), and none of the library
/// path cargo gives tests.
fn run_installed(bin: &Path, args: &[&str], home: &Path, cwd: &Path) -> Output {
    Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home)
        .output()
        .expect("run the installed sluice")
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}

#[test]
fn rpath_is_relative_to_the_binary() {
    let (paths, needed) = dynamic_section(&built_binary());
    assert!(
        needed.iter().any(|n| n.starts_with("libduckdb.so")),
        "the binary links libduckdb.so dynamically: {needed:?}"
    );
    assert!(!paths.is_empty(), "the binary has a RUNPATH");
    for p in &paths {
        assert!(
            p.starts_with("$ORIGIN"),
            "every rpath entry is relative to the binary, not to the build: {paths:?}"
        );
    }
    assert_eq!(
        paths[0], "$ORIGIN",
        "the directory of the binary comes first"
    );
    let lib = built_binary().with_file_name("libduckdb.so");
    assert!(
        lib.is_file(),
        "the build copies libduckdb.so next to the binary: {}",
        lib.display()
    );
}

#[test]
fn copied_binary_runs_elsewhere_with_its_library() {
    let built = built_binary();
    let lib = built.with_file_name("libduckdb.so");
    let home = tempfile::tempdir().expect("tempdir");
    let cwd = tempfile::tempdir().expect("tempdir");
    let inst = tempfile::tempdir().expect("tempdir");

    // Flat: sluice and libduckdb.so in one directory.
    let flat_bin = inst.path().join("flat/sluice");
    copy(&built, &flat_bin);
    copy(&lib, &inst.path().join("flat/libduckdb.so"));
    let out = run_installed(&flat_bin, &["version"], home.path(), cwd.path());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("sluice {}", env!("CARGO_PKG_VERSION")));
    let commit = lines[1].strip_prefix("commit: ").expect("commit line");
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{stdout}"
    );
    let duckdb = lines[2].strip_prefix("duckdb: v").expect("duckdb line");
    assert!(duckdb.starts_with("1."), "{stdout}");
    // The library that was loaded is the copy beside the binary.
    let loaded = duckdb.rsplit_once("loaded from ").expect("loaded from").1;
    assert_eq!(
        std::fs::canonicalize(loaded).expect("loaded path"),
        std::fs::canonicalize(inst.path().join("flat/libduckdb.so")).expect("copy"),
        "{stdout}"
    );

    // ldd resolves the library beside the binary too.
    let ldd = Command::new("ldd")
        .arg(&flat_bin)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run ldd");
    let ldd = text(&ldd.stdout);
    let line = ldd
        .lines()
        .find(|l| l.contains("libduckdb.so"))
        .unwrap_or_else(|| panic!("ldd lists libduckdb.so:\n{ldd}"));
    assert!(
        line.contains(&inst.path().join("flat").display().to_string()),
        "{line}"
    );

    // bin/ and lib/, as under a prefix like /usr/local.
    let bin = inst.path().join("prefix/bin/sluice");
    copy(&built, &bin);
    copy(&lib, &inst.path().join("prefix/lib/libduckdb.so"));
    let out = run_installed(&bin, &["version"], home.path(), cwd.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(
            &inst
                .path()
                .join("prefix/lib/libduckdb.so")
                .display()
                .to_string()
        ),
        "{}",
        text(&out.stdout)
    );

    // A subcommand that uses DuckDB for real.
    let db = cwd.path().join("t.duckdb");
    let out = run_installed(
        &flat_bin,
        &[
            "query",
            "--write",
            db.to_str().expect("utf-8 path"),
            "SELECT 40 + 2 AS answer",
        ],
        home.path(),
        cwd.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("42"), "{}", text(&out.stdout));
}

#[test]
fn binary_without_its_library_does_not_reach_into_the_build() {
    // The control: alone, the copy cannot start, so the runs above found
    // the library beside them and not some path left from the build.
    let home = tempfile::tempdir().expect("tempdir");
    let inst = tempfile::tempdir().expect("tempdir");
    let bin = inst.path().join("sluice");
    copy(&built_binary(), &bin);
    let out = run_installed(&bin, &["version"], home.path(), home.path());
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("libduckdb.so"),
        "{}",
        text(&out.stderr)
    );
}
