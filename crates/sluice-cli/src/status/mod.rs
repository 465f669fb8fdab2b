//! `sluice status [URL]`: a worker's connectors and tasks as a table, read
//! from its Kafka Connect REST API.

mod model;
mod table;

use std::time::Duration;

use clap::Args;
use reqwest::{StatusCode, Url};
use serde_json::Value;

/// Where `sluice connect` listens by default.
const DEFAULT_URL: &str = "http://127.0.0.1:8083";

/// Where the password comes from when `--user` has none.
const PASSWORD_ENV: &str = "SLUICE_REST_PASSWORD";

/// The path asked: every connector with its status and its config's info.
const CONNECTORS_PATH: &str = "connectors?expand=status&expand=info";

const EXIT_OK: u8 = 0;
/// The worker could not be reached or answered with an error.
const EXIT_FAILED: u8 = 1;
/// Bad arguments.
const EXIT_USAGE: u8 = 2;

#[derive(Debug, Args)]
#[command(long_about = "Prints the connectors and tasks of a running worker \
(`sluice connect`, or any Kafka Connect worker) in a table: name, type, task, \
state, the worker running it and, for a failed connector or task, the first \
line of its error. A Sluice worker's tasks also show their live figures: RATE \
(records a source produced or a sink read per second, recently), LAG (how far \
a source is behind the database's commits), PENDING (a sink's records read and \
not yet durable) and WAL (what a source's replication slot retains, with its \
wal_status when it is not `reserved`); columns nobody reports are left out. It \
reads GET /connectors?expand=status&expand=info from the worker's REST \
API.\n\n\
URL is the worker's REST address, its `listeners` key (default \
http://127.0.0.1:8083); `host:port` is taken as http://host:port. A worker \
with basic auth (rest.basic.auth.user / rest.basic.auth.password) needs \
--user USER:PASSWORD, or --user USER with the password in $SLUICE_REST_PASSWORD \
(kept out of the process list).\n\n\
Exit codes: 0 the table was printed, 1 the worker could not be reached or \
answered with an error, 2 invalid arguments.")]
pub struct StatusArgs {
    /// The worker's REST URL.
    #[arg(value_name = "URL", default_value = DEFAULT_URL)]
    url: String,
    /// Basic auth: USER:PASSWORD, or USER with the password in $SLUICE_REST_PASSWORD.
    #[arg(long, short = 'u', value_name = "USER[:PASSWORD]")]
    user: Option<String>,
    /// Seconds to wait for the worker's answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    timeout: u64,
}

/// Prints the table; returns the exit code.
pub fn run(args: &StatusArgs) -> u8 {
    let (url, auth) = match (worker_url(&args.url), credentials(args.user.as_deref())) {
        (Ok(u), Ok(a)) => (u, a),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("sluice status: {e}");
            return EXIT_USAGE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice status: starting the async runtime: {e}");
            return EXIT_FAILED;
        }
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    let fetched = runtime.block_on(fetch(&url, auth.as_ref(), timeout));
    let connectors = match fetched.and_then(|body| {
        model::parse(&body).map_err(|e| {
            format!(
                "{}: unexpected answer: {e}; is this a Kafka Connect REST API?",
                shown(&url, CONNECTORS_PATH)
            )
        })
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice status: {e}");
            return EXIT_FAILED;
        }
    };
    if connectors.is_empty() {
        println!("no connectors on {}", shown(&url, ""));
    } else {
        print!("{}", table::render(&connectors, table::COLUMNS));
    }
    EXIT_OK
}

/// User name and password for basic auth.
#[derive(Debug)]
struct Credentials {
    user: String,
    password: String,
}

fn credentials(user: Option<&str>) -> Result<Option<Credentials>, String> {
    let Some(arg) = user else { return Ok(None) };
    let (user, password) = match arg.split_once(':') {
        Some((u, p)) => (u.to_string(), p.to_string()),
        None => match std::env::var(PASSWORD_ENV) {
            Ok(p) => (arg.to_string(), p),
            Err(_) => {
                return Err(format!(
                    "--user {arg}: no password; give --user {arg}:PASSWORD or set {PASSWORD_ENV}"
                ))
            }
        },
    };
    if user.is_empty() {
        return Err("--user: the user name is empty; expected USER:PASSWORD".into());
    }
    Ok(Some(Credentials { user, password }))
}

/// The worker's base URL (ending in `/`); `host:port` means http.
fn worker_url(arg: &str) -> Result<Url, String> {
    let arg = arg.trim();
    let with_scheme = if arg.contains("://") {
        arg.to_string()
    } else {
        format!("http://{arg}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|e| {
        format!("URL '{arg}': {e}; expected the worker's REST address, e.g. {DEFAULT_URL}")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "URL '{arg}': expected http://host:port or https://host:port, e.g. {DEFAULT_URL}"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "URL '{arg}': a query or fragment is not part of a worker's address; give e.g. {DEFAULT_URL}"
        ));
    }
    // A worker behind a path prefix keeps it: /prefix/ + connectors.
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// `url` joined with `path`, without a password, for messages.
fn shown(url: &Url, path: &str) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    format!("{u}{path}")
}

async fn fetch(url: &Url, auth: Option<&Credentials>, timeout: Duration) -> Result<Value, String> {
    let target = url
        .join(CONNECTORS_PATH)
        .map_err(|e| format!("{}: {e}", shown(url, CONNECTORS_PATH)))?;
    let what = format!("GET {}", shown(url, CONNECTORS_PATH));
    let client = reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    let mut req = client.get(target).header("Accept", "application/json");
    if let Some(c) = auth {
        req = req.basic_auth(&c.user, Some(&c.password));
    }
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            format!(
                "{what}: no answer within {}s (raise --timeout if the worker is busy)",
                timeout.as_secs()
            )
        } else if e.is_connect() {
            format!(
                "cannot reach the worker at {}: {}; is `sluice connect` running there? \
                 Its REST address is the worker config's `listeners` (default {DEFAULT_URL})",
                shown(url, ""),
                root_cause(&e)
            )
        } else {
            format!("{what}: {}", root_cause(&e))
        }
    })?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("{what}: reading the answer: {}", root_cause(&e)))?;
    if status == StatusCode::UNAUTHORIZED {
        // Credentials may also come in the URL (http://user:password@host).
        let user = auth
            .map(|c| c.user.as_str())
            .or(Some(url.username()).filter(|u| !u.is_empty()));
        return Err(match user {
            None => format!(
                "{what}: the worker requires basic auth (HTTP 401): pass --user USER:PASSWORD"
            ),
            Some(u) => format!(
                "{what}: the worker rejected user '{u}' (HTTP 401): check the user and password \
                 against its rest.basic.auth.user / rest.basic.auth.password"
            ),
        });
    }
    if !status.is_success() {
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| snippet(&body));
        let hint = if status == StatusCode::NOT_FOUND {
            "; is this the REST address of a Kafka Connect worker?"
        } else {
            ""
        };
        return Err(format!("{what}: HTTP {status}: {message}{hint}"));
    }
    serde_json::from_slice(&body).map_err(|e| {
        format!(
            "{what}: the answer is not JSON ({e}): {}; is this a Kafka Connect REST API?",
            snippet(&body)
        )
    })
}

/// The innermost error's text: reqwest's outer layers only say "error
/// sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The start of a body, on one line, for an error message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if one_line.trim().is_empty() {
        "(empty body)".to_string()
    } else {
        one_line.trim().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = worker_url("127.0.0.1:9000").expect("host:port");
        assert_eq!(u.as_str(), "http://127.0.0.1:9000/");
        let u = worker_url("https://connect.example.com/api").expect("prefix");
        assert_eq!(
            u.join(CONNECTORS_PATH).expect("join").as_str(),
            "https://connect.example.com/api/connectors?expand=status&expand=info"
        );
        let e = worker_url("ftp://x:1").expect_err("scheme");
        assert!(
            e.contains("ftp://x:1") && e.contains("http://host:port"),
            "{e}"
        );
        let e = worker_url("http://x:1/?a=b").expect_err("query");
        assert!(e.contains("query"), "{e}");
        let e = worker_url("http://[::1").expect_err("bad");
        assert!(e.contains("http://[::1"), "{e}");
    }

    #[test]
    fn passwords_are_not_shown() {
        let u = worker_url("http://me:secret@h:1").expect("url");
        let s = shown(&u, CONNECTORS_PATH);
        assert!(!s.contains("secret") && s.contains("me@h:1"), "{s}");
    }

    #[test]
    fn user_needs_a_password() {
        let c = credentials(Some("admin:pw:with:colons"))
            .expect("ok")
            .expect("some");
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("admin", "pw:with:colons")
        );
        let e = credentials(Some(":pw")).expect_err("empty user");
        assert!(e.contains("user name is empty"), "{e}");
    }
}
