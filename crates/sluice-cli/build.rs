//! Gives the `sluice` binary an rpath to the shared libduckdb that
//! `sluice-duckdb` linked against, so it runs without `LD_LIBRARY_PATH`.

fn main() {
    if let Ok(dir) = std::env::var("DEP_SLUICE_DUCKDB_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
