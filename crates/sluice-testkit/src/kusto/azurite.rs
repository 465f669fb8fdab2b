//! Azurite, Microsoft's Azure Blob, Queue and Table storage emulator, as a
//! throwaway process per test: the storage that queued ingestion uploads
//! its blobs to and posts its queue messages on.
//!
//! Azurite is an npm package; `.ci/run` installs it into
//! `~/.cache/sluice-azurite` and exports `AZURITE_BIN`. Without the
//! variable the harness looks in that directory.
//!
//! Azurite listens with path-style URLs: `http://127.0.0.1:<port>/<account>/...`.
//! The helpers here authenticate with an account SAS signed with the
//! emulator's well-known key, the same way Azure's own SDKs sign one.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Azurite's well-known development account.
pub const ACCOUNT_NAME: &str = "devstoreaccount1";
/// The development account's well-known key (public, documented by
/// Microsoft for the emulator).
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The storage REST version the helpers speak and sign SAS tokens for.
pub const STORAGE_VERSION: &str = "2021-08-06";

/// Where `.ci/run` installs Azurite when `AZURITE_BIN` is not set.
fn default_bin() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".cache/sluice-azurite/node_modules/.bin/azurite"))
}

/// The Azurite launcher: `$AZURITE_BIN`, else the copy `.ci/run` installs
/// under `~/.cache/sluice-azurite`.
pub fn azurite_bin() -> Result<PathBuf> {
    let install = "install it with `npm install --no-save --prefix ~/.cache/sluice-azurite azurite@3.37.0` (as .ci/run does) or point AZURITE_BIN at its `azurite` launcher";
    if let Some(p) = std::env::var_os("AZURITE_BIN") {
        let p = PathBuf::from(p);
        if !p.exists() {
            bail!(
                "AZURITE_BIN is {} but no such file exists: {install}",
                p.display()
            );
        }
        return Ok(p);
    }
    match default_bin() {
        Some(p) if p.exists() => Ok(p),
        Some(p) => bail!(
            "Azurite is not installed (looked for {}): {install}",
            p.display()
        ),
        None => bail!("Azurite is not installed and HOME is not set: {install}"),
    }
}

/// A queue message as `Get Messages` hands it out.
#[derive(Debug, Clone)]
pub struct QueueMessage {
    /// The message id.
    pub id: String,
    /// Needed to delete the message (`Get Messages` only; empty on peek).
    pub pop_receipt: String,
    /// The message text as stored (Kusto queues hold base64 text).
    pub text: String,
    /// How often it was handed out.
    pub dequeue_count: u32,
}

/// A running Azurite with blob, queue and table services on free loopback
/// ports, in-memory storage, killed on drop and when the test process ends.
#[derive(Debug)]
pub struct Azurite {
    child: Child,
    client: AzuriteClient,
    _dir: tempfile::TempDir,
}

/// The storage helpers of a running [`Azurite`], cloneable into tasks
/// (an [`Azurite`] derefs to it).
#[derive(Debug, Clone)]
pub struct AzuriteClient {
    blob_port: u16,
    queue_port: u16,
    table_port: u16,
    http: reqwest::Client,
}

impl std::ops::Deref for Azurite {
    type Target = AzuriteClient;
    fn deref(&self) -> &AzuriteClient {
        &self.client
    }
}

impl Azurite {
    /// Starts Azurite and waits until all three services accept
    /// connections.
    pub fn start() -> Result<Azurite> {
        let bin = azurite_bin()?;
        let mut last = String::new();
        // Free ports can be taken by someone else between the probe and
        // Azurite's bind: try a few sets.
        for _ in 0..5 {
            match Azurite::try_start(&bin) {
                Ok(a) => return Ok(a),
                Err(e) => last = format!("{e:#}"),
            }
        }
        bail!("could not start Azurite ({}): {last}", bin.display())
    }

    fn try_start(bin: &PathBuf) -> Result<Azurite> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-azurite-")
            .tempdir()
            .context("creating a temp dir for Azurite")?;
        let blob_port = crate::free_port()?;
        let queue_port = crate::free_port()?;
        let table_port = crate::free_port()?;
        let child = Command::new(bin)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &blob_port.to_string(),
                "--queueHost",
                "127.0.0.1",
                "--queuePort",
                &queue_port.to_string(),
                "--tableHost",
                "127.0.0.1",
                "--tablePort",
                &table_port.to_string(),
                // In memory: nothing to clean up; the temp dir is only its
                // working directory.
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--disableProductStyleUrl",
                "--disableTelemetry",
                "--silent",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building an HTTP client for Azurite")?;
        let mut a = Azurite {
            child,
            client: AzuriteClient {
                blob_port,
                queue_port,
                table_port,
                http,
            },
            _dir: dir,
        };
        a.spawn_watchdog()?;
        let start = Instant::now();
        for port in [blob_port, queue_port, table_port] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Ok(Some(status)) = a.child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = a.child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    bail!("Azurite exited at start ({status}): {}", err.trim());
                }
                if start.elapsed() > Duration::from_secs(30) {
                    bail!("Azurite did not listen on port {port} within 30 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Nothing reads stderr from here on: a full pipe must not block it.
        drop(a.child.stderr.take());
        Ok(a)
    }

    /// Kills Azurite when this test process exits, however it exits
    /// (a panic that aborts, a killed test runner): Drop alone is not enough.
    fn spawn_watchdog(&self) -> Result<()> {
        let parent = std::process::id();
        let child = self.child.id();
        let script = format!(
            "while kill -0 {parent} 2>/dev/null && kill -0 {child} 2>/dev/null; do sleep 0.5; done; kill -9 {child} 2>/dev/null"
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the Azurite watchdog")?;
        Ok(())
    }

    /// Kills Azurite now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AzuriteClient {
    /// The blob service's account URL, e.g. `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn blob_url(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT_NAME}", self.blob_port)
    }
    /// The queue service's account URL.
    pub fn queue_url(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT_NAME}", self.queue_port)
    }
    /// The table service's account URL.
    pub fn table_url(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT_NAME}", self.table_port)
    }
    /// The blob service's port.
    pub fn blob_port(&self) -> u16 {
        self.blob_port
    }
    /// The queue service's port.
    pub fn queue_port(&self) -> u16 {
        self.queue_port
    }
    /// The table service's port.
    pub fn table_port(&self) -> u16 {
        self.table_port
    }
    /// The account name.
    pub fn account_name(&self) -> &'static str {
        ACCOUNT_NAME
    }
    /// The account key (base64).
    pub fn account_key(&self) -> &'static str {
        ACCOUNT_KEY
    }

    /// An account SAS (the query string, without `?`) for blob, queue and
    /// table services, all resource types, the given permissions
    /// (e.g. `rwdlacup`), valid for a day.
    pub fn account_sas(&self, permissions: &str) -> String {
        let expiry = DateTime::<Utc>::from(SystemTime::now() + Duration::from_secs(24 * 3600));
        account_sas(ACCOUNT_NAME, ACCOUNT_KEY, permissions, expiry)
    }

    /// An account SAS like [`AzuriteClient::account_sas`] that expires at `expiry`
    /// (in the past for an expired one).
    pub fn account_sas_until(&self, permissions: &str, expiry: DateTime<Utc>) -> String {
        account_sas(ACCOUNT_NAME, ACCOUNT_KEY, permissions, expiry)
    }

    fn admin_sas(&self) -> String {
        self.account_sas("rwdlacup")
    }

    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req
            .header("x-ms-version", STORAGE_VERSION)
            .send()
            .await
            .map_err(|e| e.without_url())
            .with_context(|| format!("{what}: request to Azurite failed"))?;
        Ok(resp)
    }

    async fn expect_ok(what: &str, resp: reqwest::Response, ok: &[u16]) -> Result<String> {
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        if !ok.contains(&status) {
            bail!("{what}: Azurite answered {status}: {body}");
        }
        Ok(body)
    }

    /// Creates a blob container (an existing one is fine).
    pub async fn create_container(&self, name: &str) -> Result<()> {
        let what = format!("creating container {name}");
        let url = format!(
            "{}/{name}?restype=container&{}",
            self.blob_url(),
            self.admin_sas()
        );
        let resp = self
            .send(&what, self.http.put(url).header("Content-Length", "0"))
            .await?;
        AzuriteClient::expect_ok(&what, resp, &[201, 409])
            .await
            .map(|_| ())
    }

    /// Creates a queue (an existing one is fine).
    pub async fn create_queue(&self, name: &str) -> Result<()> {
        let what = format!("creating queue {name}");
        let url = format!("{}/{name}?{}", self.queue_url(), self.admin_sas());
        let resp = self
            .send(&what, self.http.put(url).header("Content-Length", "0"))
            .await?;
        AzuriteClient::expect_ok(&what, resp, &[201, 204])
            .await
            .map(|_| ())
    }

    /// Creates a table (an existing one is fine).
    pub async fn create_table(&self, name: &str) -> Result<()> {
        let what = format!("creating table {name}");
        let url = format!("{}/Tables?{}", self.table_url(), self.admin_sas());
        let req = self
            .http
            .post(url)
            .header("Accept", "application/json;odata=nometadata")
            .header("DataServiceVersion", "3.0")
            .json(&serde_json::json!({ "TableName": name }));
        let resp = self.send(&what, req).await?;
        AzuriteClient::expect_ok(&what, resp, &[201, 204, 409])
            .await
            .map(|_| ())
    }

    /// The names of the blobs in `container`.
    pub async fn list_blobs(&self, container: &str) -> Result<Vec<String>> {
        let what = format!("listing blobs of {container}");
        let url = format!(
            "{}/{container}?restype=container&comp=list&{}",
            self.blob_url(),
            self.admin_sas()
        );
        let resp = self.send(&what, self.http.get(url)).await?;
        let body = AzuriteClient::expect_ok(&what, resp, &[200]).await?;
        Ok(xml_elements(&body, "Blob")
            .iter()
            .filter_map(|b| xml_elements(b, "Name").into_iter().next())
            .map(|n| xml_unescape(&n))
            .collect())
    }

    /// A blob's content.
    pub async fn get_blob(&self, container: &str, name: &str) -> Result<Vec<u8>> {
        let what = format!("reading blob {container}/{name}");
        let url = format!(
            "{}/{container}/{name}?{}",
            self.blob_url(),
            self.admin_sas()
        );
        let resp = self.send(&what, self.http.get(url)).await?;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = resp.text().await.unwrap_or_default();
            bail!("{what}: Azurite answered {status}: {body}");
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| e.without_url())
            .with_context(|| format!("{what}: reading the body"))?;
        Ok(bytes.to_vec())
    }

    /// Uploads `data` as block blob `name` in `container`.
    pub async fn put_blob(&self, container: &str, name: &str, data: Vec<u8>) -> Result<()> {
        let what = format!("writing blob {container}/{name}");
        let url = format!(
            "{}/{container}/{name}?{}",
            self.blob_url(),
            self.admin_sas()
        );
        let req = self
            .http
            .put(url)
            .header("x-ms-blob-type", "BlockBlob")
            .body(data);
        let resp = self.send(&what, req).await?;
        AzuriteClient::expect_ok(&what, resp, &[201])
            .await
            .map(|_| ())
    }

    /// Up to `n` (1..=32) messages from the front of `queue`, left in place.
    pub async fn peek_messages(&self, queue: &str, n: u32) -> Result<Vec<QueueMessage>> {
        let what = format!("peeking at queue {queue}");
        let url = format!(
            "{}/{queue}/messages?peekonly=true&numofmessages={n}&{}",
            self.queue_url(),
            self.admin_sas()
        );
        let resp = self.send(&what, self.http.get(url)).await?;
        let body = AzuriteClient::expect_ok(&what, resp, &[200]).await?;
        Ok(parse_messages(&body))
    }

    /// Takes up to `n` (1..=32) messages from `queue`, invisible to others
    /// for `visibility`; delete them with [`AzuriteClient::delete_message`].
    pub async fn get_messages(
        &self,
        queue: &str,
        n: u32,
        visibility: Duration,
    ) -> Result<Vec<QueueMessage>> {
        let what = format!("taking messages from queue {queue}");
        let url = format!(
            "{}/{queue}/messages?numofmessages={n}&visibilitytimeout={}&{}",
            self.queue_url(),
            visibility.as_secs().max(1),
            self.admin_sas()
        );
        let resp = self.send(&what, self.http.get(url)).await?;
        let body = AzuriteClient::expect_ok(&what, resp, &[200]).await?;
        Ok(parse_messages(&body))
    }

    /// Deletes a message taken with [`AzuriteClient::get_messages`].
    pub async fn delete_message(&self, queue: &str, msg: &QueueMessage) -> Result<()> {
        let what = format!("deleting message {} from queue {queue}", msg.id);
        let url = format!(
            "{}/{queue}/messages/{}?popreceipt={}&{}",
            self.queue_url(),
            msg.id,
            percent_encode(&msg.pop_receipt),
            self.admin_sas()
        );
        let resp = self.send(&what, self.http.delete(url)).await?;
        AzuriteClient::expect_ok(&what, resp, &[204])
            .await
            .map(|_| ())
    }

    /// Posts a message whose text is `text` (already encoded as the
    /// reader expects, e.g. base64).
    pub async fn put_message(&self, queue: &str, text: &str) -> Result<()> {
        let what = format!("posting a message to queue {queue}");
        let url = format!("{}/{queue}/messages?{}", self.queue_url(), self.admin_sas());
        let body = format!(
            "<QueueMessage><MessageText>{}</MessageText></QueueMessage>",
            xml_escape(text)
        );
        let resp = self
            .send(
                &what,
                self.http
                    .post(url)
                    .header("Content-Type", "application/xml")
                    .body(body),
            )
            .await?;
        AzuriteClient::expect_ok(&what, resp, &[201])
            .await
            .map(|_| ())
    }

    /// The entity (PartitionKey, RowKey) of `table`, None when absent.
    pub async fn get_entity(
        &self,
        table: &str,
        partition_key: &str,
        row_key: &str,
    ) -> Result<Option<serde_json::Value>> {
        let what = format!("reading entity ({partition_key}, {row_key}) of table {table}");
        let url = format!(
            "{}/{table}(PartitionKey='{}',RowKey='{}')?{}",
            self.table_url(),
            percent_encode(&partition_key.replace('\'', "''")),
            percent_encode(&row_key.replace('\'', "''")),
            self.admin_sas()
        );
        let req = self
            .http
            .get(url)
            .header("Accept", "application/json;odata=nometadata")
            .header("DataServiceVersion", "3.0");
        let resp = self.send(&what, req).await?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        let body = AzuriteClient::expect_ok(&what, resp, &[200]).await?;
        let v = serde_json::from_str(&body)
            .with_context(|| format!("{what}: the answer is not JSON: {body}"))?;
        Ok(Some(v))
    }

    /// Inserts or merges `properties` into the entity (PartitionKey, RowKey).
    pub async fn merge_entity(
        &self,
        table: &str,
        partition_key: &str,
        row_key: &str,
        properties: serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        let what = format!("writing entity ({partition_key}, {row_key}) of table {table}");
        let url = format!(
            "{}/{table}(PartitionKey='{}',RowKey='{}')?{}",
            self.table_url(),
            percent_encode(&partition_key.replace('\'', "''")),
            percent_encode(&row_key.replace('\'', "''")),
            self.admin_sas()
        );
        let mut body = properties;
        body.insert("PartitionKey".into(), partition_key.into());
        body.insert("RowKey".into(), row_key.into());
        let method = reqwest::Method::from_bytes(b"MERGE").context("the MERGE method")?;
        let req = self
            .http
            .request(method, url)
            .header("Accept", "application/json;odata=nometadata")
            .header("DataServiceVersion", "3.0")
            .json(&serde_json::Value::Object(body));
        let resp = self.send(&what, req).await?;
        AzuriteClient::expect_ok(&what, resp, &[204])
            .await
            .map(|_| ())
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Signs an account SAS the way Azure Storage specifies it (version
/// 2020-12-06 and later: the string to sign ends with the encryption scope
/// and a newline), for blob, queue and table services and all resource
/// types. Returns the query string without `?`.
pub fn account_sas(
    account: &str,
    key_b64: &str,
    permissions: &str,
    expiry: DateTime<Utc>,
) -> String {
    let services = "bqt";
    let resource_types = "sco";
    let expiry = expiry.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let protocol = "https,http";
    let string_to_sign = format!(
        "{account}\n{permissions}\n{services}\n{resource_types}\n\n{expiry}\n\n{protocol}\n{STORAGE_VERSION}\n\n"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_b64)
        .unwrap_or_default();
    let sig = match Hmac::<Sha256>::new_from_slice(&key) {
        Ok(mut mac) => {
            mac.update(string_to_sign.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length; this arm is unreachable.
        Err(_) => String::new(),
    };
    format!(
        "sv={STORAGE_VERSION}&ss={services}&srt={resource_types}&sp={permissions}&se={}&spr={}&sig={}",
        percent_encode(&expiry),
        percent_encode(protocol),
        percent_encode(&sig)
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn parse_messages(body: &str) -> Vec<QueueMessage> {
    xml_elements(body, "QueueMessage")
        .iter()
        .map(|m| {
            let field = |t: &str| {
                xml_elements(m, t)
                    .into_iter()
                    .next()
                    .map(|v| xml_unescape(&v))
                    .unwrap_or_default()
            };
            QueueMessage {
                id: field("MessageId"),
                pop_receipt: field("PopReceipt"),
                text: field("MessageText"),
                dequeue_count: field("DequeueCount").parse().unwrap_or(0),
            }
        })
        .collect()
}

/// The inner text of every `<tag>...</tag>` in `xml` (not nested in
/// itself), enough for the storage services' flat answers.
pub fn xml_elements(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        match after.find(&close) {
            Some(j) => {
                out.push(after[..j].to_owned());
                rest = &after[j + close.len()..];
            }
            None => break,
        }
    }
    out
}

/// Escapes text for an XML element.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// Undoes [`xml_escape`].
pub fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_queues_and_tables_with_an_account_sas() {
        let az = match Azurite::start() {
            Ok(a) => a,
            Err(e) => panic!("{e:#}"),
        };
        az.create_container("cont1").await.expect("container");
        az.put_blob("cont1", "a.csv.gz", b"hello".to_vec())
            .await
            .expect("put blob");
        assert_eq!(
            az.list_blobs("cont1").await.expect("list"),
            vec!["a.csv.gz"]
        );
        assert_eq!(
            az.get_blob("cont1", "a.csv.gz").await.expect("get"),
            b"hello"
        );

        az.create_queue("queue1").await.expect("queue");
        az.put_message("queue1", "aGk=").await.expect("put message");
        let peeked = az.peek_messages("queue1", 32).await.expect("peek");
        assert_eq!(peeked.len(), 1);
        assert_eq!(peeked[0].text, "aGk=");
        let taken = az
            .get_messages("queue1", 32, Duration::from_secs(30))
            .await
            .expect("get messages");
        assert_eq!(taken.len(), 1);
        az.delete_message("queue1", &taken[0])
            .await
            .expect("delete");
        assert!(az
            .peek_messages("queue1", 32)
            .await
            .expect("peek")
            .is_empty());

        az.create_table("table1").await.expect("table");
        assert!(az
            .get_entity("table1", "p", "r")
            .await
            .expect("absent")
            .is_none());
        let mut props = serde_json::Map::new();
        props.insert("Status".into(), "Pending".into());
        az.merge_entity("table1", "p", "r", props)
            .await
            .expect("merge");
        let e = az
            .get_entity("table1", "p", "r")
            .await
            .expect("get")
            .expect("present");
        assert_eq!(e["Status"], "Pending");

        // An expired SAS is refused, as Azure Storage refuses it.
        let past = DateTime::<Utc>::from(SystemTime::now() - Duration::from_secs(60));
        let url = format!(
            "{}/cont1/a.csv.gz?{}",
            az.blob_url(),
            az.account_sas_until("r", past)
        );
        let resp = reqwest::get(url).await.expect("request");
        assert_eq!(resp.status().as_u16(), 403);
    }
}
