//! A headless Chromium driven through chromedriver's WebDriver API, for
//! the tests of pages the worker serves. Needs Debian's `chromium` and
//! `chromium-driver` (`.ci/run` installs them), or CHROMIUM_BIN and
//! CHROMEDRIVER_BIN naming them.

#![allow(dead_code)] // each test file uses part of it

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::common::{tail, LONG};

/// The WebDriver "element" key of a found element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session.
pub struct Browser {
    driver: Child,
    client: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    _profile: tempfile::TempDir,
}

/// What the WebDriver server answered when it was not success.
#[derive(Debug)]
pub struct WebDriverError {
    pub error: String,
    pub message: String,
}

fn program(env: &str, default: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| default.to_string())
}

impl Browser {
    pub async fn start() -> Browser {
        let chromium = program("CHROMIUM_BIN", "/usr/bin/chromium");
        let chromedriver = program("CHROMEDRIVER_BIN", "chromedriver");
        assert!(
            std::path::Path::new(&chromium).exists(),
            "{chromium} not found: install Debian's chromium and chromium-driver (.ci/run does), or set CHROMIUM_BIN"
        );
        let port = sluice_testkit::free_port().expect("free port");
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {chromedriver} ({e}): install chromium-driver (.ci/run does), or set CHROMEDRIVER_BIN")
            });
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match client.get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json::<Json>()
                    .await
                    .is_ok_and(|j| j["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let resp: Json = client
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("new session answer");
        let id = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {resp}"))
            .to_string();
        Browser {
            driver,
            client,
            session: format!("{base}/session/{id}"),
            _profile: profile,
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Json,
    ) -> Result<Json, WebDriverError> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.session));
        if !body.is_null() {
            req = req.json(&body);
        }
        let resp: Json = req
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("chromedriver answers JSON");
        let value = resp["value"].clone();
        match value.get("error").and_then(Json::as_str) {
            Some(error) => Err(WebDriverError {
                error: error.to_string(),
                message: value["message"].as_str().unwrap_or_default().to_string(),
            }),
            None => Ok(value),
        }
    }

    /// Sends `Authorization` with every request of the browser, as it does
    /// once the user signed in through its own prompt.
    pub async fn sign_in(&self, user: &str, password: &str) {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        for (cmd, params) in [
            ("Network.enable", json!({})),
            (
                "Network.setExtraHTTPHeaders",
                json!({"headers": {"Authorization": format!("Basic {token}")}}),
            ),
        ] {
            self.call(
                reqwest::Method::POST,
                "/goog/cdp/execute",
                json!({"cmd": cmd, "params": params}),
            )
            .await
            .unwrap_or_else(|e| panic!("{cmd}: {e:?}"));
        }
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({"url": url}))
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e:?}"));
    }

    /// Runs `script` (a function body) in the page; its return value.
    pub async fn eval(&self, script: &str) -> Json {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
        .unwrap_or_else(|e| panic!("script {script}: {e:?}"))
    }

    /// Clicks the element `css` selects; the page redraws its table every
    /// few seconds, so an element gone stale is looked up again.
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self
                .call(
                    reqwest::Method::POST,
                    "/element",
                    json!({"using": "css selector", "value": css}),
                )
                .await;
            let result = match found {
                Ok(el) => {
                    let id = el[ELEMENT]
                        .as_str()
                        .unwrap_or_else(|| panic!("no element id in {el}"))
                        .to_string();
                    self.call(
                        reqwest::Method::POST,
                        &format!("/element/{id}/click"),
                        json!({}),
                    )
                    .await
                    .map(|_| ())
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("clicking {css}: {} ({}); again", e.error, e.message);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("clicking {css}: {e:?}"),
            }
        }
    }

    /// Evaluates `script` until `done` holds for its value; the value.
    pub async fn wait_for(
        &self,
        what: &str,
        script: &str,
        log: impl Fn() -> String,
        done: impl Fn(&Json) -> bool,
    ) -> Json {
        let deadline = Instant::now() + LONG;
        loop {
            let v = self.eval(script).await;
            if done(&v) {
                return v;
            }
            if Instant::now() > deadline {
                let page = self
                    .eval("return document.body.innerText")
                    .await
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                panic!(
                    "timed out waiting for {what}; last value {v}\npage text:\n{page}\nworker log:\n{}",
                    tail(&log(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (closing Chromium), then chromedriver.
        let session = self.session.clone();
        let client = self.client.clone();
        let closed = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(async { client.delete(&session).send().await.is_ok() }))
                .unwrap_or(false)
        })
        .join();
        drop(closed);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
