//! A replication-protocol connection (`replication=database`): startup,
//! authentication (cleartext, MD5, SCRAM-SHA-256), TLS, simple queries for
//! replication commands, and the CopyBoth stream of WAL data.
//!
//! tokio-postgres has no replication mode, so this speaks the wire protocol
//! directly, using `postgres-protocol` for message encoding and SCRAM. The
//! stream is split: a reader task parses CopyData into a bounded channel
//! while a feedback task sends standby status updates on a timer, so the
//! server keeps the connection even while Sluice is back-pressured.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use sluice_pgoutput::{encode_standby_status_update, parse_copy_data, Lsn, ReplicationMessage};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, Mutex, Notify};

use crate::conn::{ConnParams, SESSION_SETTINGS};
use crate::error::{ConnectionLost, PgError};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One backend message: its tag and body.
struct BackendMsg {
    tag: u8,
    body: Bytes,
}

/// A replication connection, before streaming starts.
pub struct ReplicationConn {
    io: Box<dyn Io>,
    buf: BytesMut,
    /// Server version number (e.g. 150004).
    pub server_version: u32,
}

/// Rows of a simple query: column names and text values.
#[derive(Debug, Default)]
pub struct QueryResult {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows of text values.
    pub rows: Vec<Vec<Option<String>>>,
}

impl QueryResult {
    /// The value of `column` in the first row.
    pub fn first(&self, column: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| c == column)?;
        self.rows.first()?.get(i)?.as_deref()
    }
}

/// What `CREATE_REPLICATION_SLOT` returned.
#[derive(Debug, Clone)]
pub struct CreatedSlot {
    /// The LSN from which the slot streams.
    pub consistent_point: Lsn,
    /// The exported snapshot, valid until the next command on this
    /// connection.
    pub snapshot_name: Option<String>,
}

fn read_cstr(b: &mut Bytes) -> Result<String> {
    let end = b
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| anyhow!("malformed message from server: unterminated string"))?;
    let s = String::from_utf8_lossy(&b[..end]).into_owned();
    b.advance(end + 1);
    Ok(s)
}

fn parse_error_fields(mut body: Bytes) -> PgError {
    let mut e = PgError::default();
    while body.has_remaining() {
        let code = body.get_u8();
        if code == 0 {
            break;
        }
        let Ok(v) = read_cstr(&mut body) else { break };
        match code {
            b'S' | b'V' => e.severity = v,
            b'C' => e.code = v,
            b'M' => e.message = v,
            b'D' => e.detail = Some(v),
            b'H' => e.hint = Some(v),
            _ => {}
        }
    }
    e
}

/// Messages above this size do not leave their allocation to the read
/// buffer.
const LARGE_MESSAGE: usize = 4 << 20;

async fn read_msg(
    io: &mut (impl AsyncRead + Unpin + ?Sized),
    buf: &mut BytesMut,
) -> Result<BackendMsg> {
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len < 4 {
                bail!("malformed message from server: length {len}");
            }
            if buf.len() > len {
                let tag = buf[0];
                let mut frame = buf.split_to(len + 1).freeze();
                frame.advance(5);
                if len > LARGE_MESSAGE {
                    // The frame shares `buf`'s allocation: moving the few
                    // bytes after it to a buffer of their own lets the
                    // allocation go with the frame, instead of keeping the
                    // buffer as large as the largest value for good.
                    *buf = BytesMut::from(&buf[..]);
                }
                return Ok(BackendMsg { tag, body: frame });
            }
            buf.reserve(len + 1 - buf.len());
        } else {
            // Large reads: one syscall brings many WAL messages.
            buf.reserve(256 * 1024);
        }
        let n = io.read_buf(buf).await.context("reading from PostgreSQL")?;
        if n == 0 {
            return Err(
                ConnectionLost("PostgreSQL closed the replication connection".into()).into(),
            );
        }
    }
}

impl ReplicationConn {
    /// Connects with `replication=database` and authenticates.
    pub async fn connect(params: &ConnParams) -> Result<ReplicationConn> {
        let fut = Self::connect_inner(params);
        tokio::time::timeout(params.connect_timeout, fut)
            .await
            .map_err(|_| {
                anyhow::Error::new(ConnectionLost(format!(
                    "timed out after {:?} connecting to PostgreSQL at {}:{}",
                    params.connect_timeout, params.host, params.port
                )))
            })?
    }

    async fn connect_inner(params: &ConnParams) -> Result<ReplicationConn> {
        let target = format!("{}:{}", params.host, params.port);
        let mut io: Box<dyn Io> = if params.host.starts_with('/') {
            let path = format!("{}/.s.PGSQL.{}", params.host, params.port);
            Box::new(
                tokio::net::UnixStream::connect(&path)
                    .await
                    .with_context(|| format!("connecting to PostgreSQL socket {path}"))?,
            )
        } else {
            let tcp = tokio::net::TcpStream::connect(&target)
                .await
                .with_context(|| format!("connecting to PostgreSQL at {target}"))?;
            tcp.set_nodelay(true).ok();
            match params.tls_config()? {
                None => Box::new(tcp),
                Some(tls) => {
                    let mut tcp = tcp;
                    let mut req = BytesMut::new();
                    frontend::ssl_request(&mut req);
                    tcp.write_all(&req).await?;
                    let mut answer = [0u8; 1];
                    tcp.read_exact(&mut answer).await?;
                    match answer[0] {
                        b'S' => {
                            let name = rustls::pki_types::ServerName::try_from(params.host.clone())
                                .with_context(|| {
                                    format!("'{}' is not a valid TLS server name", params.host)
                                })?;
                            let connector = tokio_rustls::TlsConnector::from(tls);
                            Box::new(connector.connect(name, tcp).await.with_context(|| {
                                format!("TLS handshake with PostgreSQL at {target}")
                            })?)
                        }
                        _ if params.sslmode == crate::conn::SslMode::Prefer => Box::new(tcp),
                        _ => {
                            return Err(crate::error::TlsRefused(format!(
                                "PostgreSQL at {target} does not accept TLS but database.sslmode \
                                 requires it: enable ssl on the server or set database.sslmode=prefer"
                            ))
                            .into())
                        }
                    }
                }
            }
        };
        let options: String = SESSION_SETTINGS
            .iter()
            .map(|(k, v)| format!("-c {k}={v} "))
            .collect();
        let mut out = BytesMut::new();
        frontend::startup_message(
            [
                ("user", params.user.as_str()),
                ("database", params.dbname.as_str()),
                ("replication", "database"),
                ("application_name", params.application_name.as_str()),
                ("options", options.trim_end()),
            ],
            &mut out,
        )?;
        io.write_all(&out).await?;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut server_version = 0;
        let mut scram: Option<ScramSha256> = None;
        let password = || {
            params.password.clone().ok_or_else(|| {
                anyhow!(
                    "PostgreSQL asks for a password for user '{}': set database.password or PGPASSWORD",
                    params.user
                )
            })
        };
        loop {
            let mut m = read_msg(&mut io, &mut buf).await?;
            out.clear();
            match m.tag {
                b'R' => {
                    if m.body.len() < 4 {
                        bail!("malformed authentication request");
                    }
                    let kind = m.body.get_i32();
                    match kind {
                        0 => {}
                        3 => {
                            frontend::password_message(password()?.as_bytes(), &mut out)?;
                        }
                        5 => {
                            if m.body.len() < 4 {
                                bail!("malformed MD5 request");
                            }
                            let salt = [m.body[0], m.body[1], m.body[2], m.body[3]];
                            let hash = postgres_protocol::authentication::md5_hash(
                                params.user.as_bytes(),
                                password()?.as_bytes(),
                                salt,
                            );
                            frontend::password_message(hash.as_bytes(), &mut out)?;
                        }
                        10 => {
                            let mut mechs = Vec::new();
                            while m.body.first().is_some_and(|&c| c != 0) {
                                mechs.push(read_cstr(&mut m.body)?);
                            }
                            if !mechs.iter().any(|x| x == SCRAM_SHA_256) {
                                bail!("PostgreSQL offers SASL mechanisms {mechs:?}; Sluice supports {SCRAM_SHA_256}");
                            }
                            let s = ScramSha256::new(
                                password()?.as_bytes(),
                                ChannelBinding::unsupported(),
                            );
                            frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| anyhow!("unexpected SASL continue"))?;
                            s.update(&m.body).context("SCRAM authentication failed")?;
                            frontend::sasl_response(s.message(), &mut out)?;
                        }
                        12 => {
                            let s = scram.as_mut().ok_or_else(|| anyhow!("unexpected SASL final"))?;
                            s.finish(&m.body)
                                .context("SCRAM authentication: server signature mismatch")?;
                        }
                        other => bail!(
                            "PostgreSQL asks for authentication method {other}, which Sluice does not support \
                             (supported: trust, password, md5, scram-sha-256)"
                        ),
                    }
                    if !out.is_empty() {
                        io.write_all(&out).await?;
                    }
                }
                b'S' => {
                    let name = read_cstr(&mut m.body)?;
                    let value = read_cstr(&mut m.body)?;
                    if name == "server_version" {
                        server_version = parse_server_version(&value);
                    }
                }
                b'K' | b'N' => {}
                b'Z' => break,
                b'E' => {
                    let e = parse_error_fields(m.body);
                    return Err(anyhow::Error::new(e).context(format!(
                        "opening a replication connection to {target} as '{}'",
                        params.user
                    )));
                }
                t => bail!("unexpected message '{}' during startup", t as char),
            }
        }
        Ok(ReplicationConn {
            io,
            buf,
            server_version,
        })
    }

    /// Runs a replication command or query and collects its rows.
    pub async fn simple_query(&mut self, sql: &str) -> Result<QueryResult> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)?;
        self.io.write_all(&out).await?;
        let mut res = QueryResult::default();
        let mut err = None;
        loop {
            let mut m = read_msg(&mut self.io, &mut self.buf).await?;
            match m.tag {
                b'T' => {
                    if m.body.len() < 2 {
                        bail!("malformed row description");
                    }
                    let n = m.body.get_u16();
                    for _ in 0..n {
                        res.columns.push(read_cstr(&mut m.body)?);
                        if m.body.len() < 18 {
                            bail!("malformed row description");
                        }
                        m.body.advance(18);
                    }
                }
                b'D' => {
                    if m.body.len() < 2 {
                        bail!("malformed data row");
                    }
                    let n = m.body.get_u16();
                    let mut row = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        if m.body.len() < 4 {
                            bail!("malformed data row");
                        }
                        let len = m.body.get_i32();
                        if len < 0 {
                            row.push(None);
                        } else {
                            let len = len as usize;
                            if m.body.len() < len {
                                bail!("malformed data row");
                            }
                            row.push(Some(String::from_utf8_lossy(&m.body[..len]).into_owned()));
                            m.body.advance(len);
                        }
                    }
                    res.rows.push(row);
                }
                b'E' => err = Some(parse_error_fields(m.body)),
                b'Z' => break,
                b'W' => bail!("unexpected CopyBoth response to '{sql}'"),
                _ => {}
            }
        }
        match err {
            Some(e) => Err(anyhow::Error::new(e).context(format!("running '{sql}'"))),
            None => Ok(res),
        }
    }

    /// `IDENTIFY_SYSTEM`: the current WAL flush position.
    pub async fn identify_system(&mut self) -> Result<Lsn> {
        let r = self.simple_query("IDENTIFY_SYSTEM").await?;
        let pos = r
            .first("xlogpos")
            .ok_or_else(|| anyhow!("IDENTIFY_SYSTEM returned no xlogpos"))?;
        sluice_pgoutput::parse_lsn(pos).map_err(|e| anyhow!("IDENTIFY_SYSTEM xlogpos: {e}"))
    }

    /// Creates a logical slot with pgoutput, optionally exporting its
    /// snapshot for a consistent initial read.
    pub async fn create_slot(&mut self, slot: &str, export_snapshot: bool) -> Result<CreatedSlot> {
        let mode = if export_snapshot {
            "EXPORT_SNAPSHOT"
        } else {
            "NOEXPORT_SNAPSHOT"
        };
        let r = self
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {mode}",
                quote_ident(slot)
            ))
            .await?;
        let cp = r
            .first("consistent_point")
            .ok_or_else(|| anyhow!("CREATE_REPLICATION_SLOT returned no consistent_point"))?;
        Ok(CreatedSlot {
            consistent_point: sluice_pgoutput::parse_lsn(cp)
                .map_err(|e| anyhow!("consistent_point: {e}"))?,
            snapshot_name: r.first("snapshot_name").map(str::to_owned),
        })
    }

    /// Starts logical streaming from `slot` and hands the connection to a
    /// reader and a feedback task.
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: Lsn,
        options: &[(&str, String)],
        status_interval: Duration,
    ) -> Result<ReplicationStream> {
        let opts: Vec<String> = options
            .iter()
            .map(|(k, v)| format!("\"{k}\" '{}'", v.replace('\'', "''")))
            .collect();
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {} ({})",
            quote_ident(slot),
            sluice_pgoutput::format_lsn(start),
            opts.join(", ")
        );
        let mut out = BytesMut::new();
        frontend::query(&sql, &mut out)?;
        self.io.write_all(&out).await?;
        loop {
            let m = read_msg(&mut self.io, &mut self.buf).await?;
            match m.tag {
                b'W' => break,
                b'E' => {
                    let e = parse_error_fields(m.body);
                    return Err(anyhow::Error::new(e).context(format!("running '{sql}'")));
                }
                b'N' => {}
                t => bail!("unexpected message '{}' after START_REPLICATION", t as char),
            }
        }
        let (rd, wr) = tokio::io::split(self.io);
        let feedback = Arc::new(Feedback {
            received: AtomicU64::new(start),
            flushed: AtomicU64::new(start),
            reply_now: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let writer = Arc::new(Mutex::new(wr));
        let (tx, rx) = mpsc::channel(4096);
        let reader = tokio::spawn(reader_loop(rd, self.buf, tx, feedback.clone()));
        let fb = {
            let (w, f) = (writer.clone(), feedback.clone());
            tokio::spawn(async move {
                let _ = feedback_loop(w, f, status_interval).await;
            })
        };
        Ok(ReplicationStream {
            rx,
            feedback,
            writer,
            tasks: vec![reader, fb],
        })
    }
}

fn parse_server_version(v: &str) -> u32 {
    let mut parts = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    if major >= 10 {
        major * 10000 + minor
    } else {
        major * 10000 + minor * 100 + parts.next().unwrap_or(0)
    }
}

/// Quotes an identifier for SQL.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a string literal for SQL.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

struct Feedback {
    received: AtomicU64,
    flushed: AtomicU64,
    reply_now: Notify,
    closed: AtomicBool,
}

fn pg_now_micros() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    now - sluice_pgoutput::PG_EPOCH_OFFSET_MICROS
}

async fn send_status(w: &Mutex<WriteHalf<Box<dyn Io>>>, fb: &Feedback, reply: bool) -> Result<()> {
    let flushed = fb.flushed.load(Ordering::Acquire);
    let received = fb.received.load(Ordering::Acquire).max(flushed);
    let body = encode_standby_status_update(received, flushed, flushed, pg_now_micros(), reply);
    let mut out = BytesMut::new();
    frontend::CopyData::new(&body[..])?.write(&mut out);
    let mut w = w.lock().await;
    w.write_all(&out).await?;
    w.flush().await?;
    Ok(())
}

async fn feedback_loop(
    w: Arc<Mutex<WriteHalf<Box<dyn Io>>>>,
    fb: Arc<Feedback>,
    every: Duration,
) -> Result<()> {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = fb.reply_now.notified() => {}
        }
        if fb.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Err(e) = send_status(&w, &fb, false).await {
            tracing::debug!("sending standby status update failed: {e:#}");
            return Err(e);
        }
    }
}

async fn reader_loop(
    mut rd: ReadHalf<Box<dyn Io>>,
    mut buf: BytesMut,
    tx: mpsc::Sender<Result<ReplicationMessage>>,
    fb: Arc<Feedback>,
) {
    loop {
        let m = match read_msg(&mut rd, &mut buf).await {
            Ok(m) => m,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                break;
            }
        };
        let item = match m.tag {
            b'd' => match parse_copy_data(m.body) {
                Ok(msg) => {
                    match &msg {
                        ReplicationMessage::PrimaryKeepalive {
                            reply_requested, ..
                        } => {
                            if *reply_requested {
                                fb.reply_now.notify_one();
                            }
                        }
                        ReplicationMessage::XLogData { .. } => {}
                    }
                    Ok(msg)
                }
                Err(e) => Err(anyhow!("malformed replication message: {e}")),
            },
            b'E' => Err(anyhow::Error::new(parse_error_fields(m.body))
                .context("PostgreSQL ended replication with an error")),
            // The server ends the copy on shutdown (CopyDone, then the
            // command's completion): a disconnect, worth a retry.
            b'c' | b'C' | b'Z' => Err(ConnectionLost(format!(
                "replication stream closed by the server (message '{}')",
                m.tag as char
            ))
            .into()),
            b'N' => continue,
            t => Err(anyhow!(
                "unexpected message '{}' in replication stream",
                t as char
            )),
        };
        let is_err = item.is_err();
        if tx.send(item).await.is_err() || is_err {
            break;
        }
    }
    fb.closed.store(true, Ordering::Release);
    fb.reply_now.notify_one();
}

/// A running logical replication stream.
pub struct ReplicationStream {
    rx: mpsc::Receiver<Result<ReplicationMessage>>,
    feedback: Arc<Feedback>,
    writer: Arc<Mutex<WriteHalf<Box<dyn Io>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ReplicationStream {
    /// The next message; an error when the connection broke.
    pub async fn recv(&mut self) -> Result<ReplicationMessage> {
        match self.rx.recv().await {
            Some(r) => r,
            None => Err(ConnectionLost("replication stream closed".into()).into()),
        }
    }

    /// Records how far WAL has been received (reported as the write
    /// position).
    pub fn set_received(&self, lsn: Lsn) {
        self.feedback.received.fetch_max(lsn, Ordering::AcqRel);
    }

    /// Confirms `lsn` as flushed: the server may discard WAL before it.
    /// Only ever moves forward.
    pub fn confirm(&self, lsn: Lsn) {
        let prev = self.feedback.flushed.fetch_max(lsn, Ordering::AcqRel);
        if lsn > prev {
            self.feedback.reply_now.notify_one();
        }
    }

    /// The confirmed position.
    pub fn confirmed(&self) -> Lsn {
        self.feedback.flushed.load(Ordering::Acquire)
    }

    /// Sends a status update now and closes the connection.
    pub async fn close(self) {
        let _ = send_status(&self.writer, &self.feedback, false).await;
        self.feedback.closed.store(true, Ordering::Release);
        let mut out = BytesMut::new();
        frontend::copy_done(&mut out);
        frontend::terminate(&mut out);
        {
            let mut w = self.writer.lock().await;
            let _ = w.write_all(&out).await;
            let _ = w.shutdown().await;
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for ReplicationStream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
