//! Connection parameters and TLS for every PostgreSQL connection Sluice
//! opens (catalog, snapshot and replication), from Debezium's `database.*`
//! keys.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// `database.sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it, without verifying the certificate.
    Prefer,
    /// Require TLS, without verifying the certificate.
    Require,
    /// Require TLS and a certificate chain to a trusted root.
    VerifyCa,
    /// Require TLS, a trusted chain, and a certificate matching the host.
    VerifyFull,
}

impl SslMode {
    /// Parses Debezium's spelling.
    pub fn parse(v: &str) -> Option<SslMode> {
        Some(match v.to_ascii_lowercase().as_str() {
            "disable" | "disabled" => SslMode::Disable,
            "prefer" | "allow" => SslMode::Prefer,
            "require" | "required" => SslMode::Require,
            "verify-ca" | "verify_ca" => SslMode::VerifyCa,
            "verify-full" | "verify_full" | "verify_identity" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// The canonical spelling.
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Everything needed to open a connection.
#[derive(Debug, Clone)]
pub struct ConnParams {
    /// Host name, IP, or a Unix socket directory (starting with `/`).
    pub host: String,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    /// Password (from the config or `PGPASSWORD`).
    pub password: Option<String>,
    /// Database.
    pub dbname: String,
    /// TLS mode.
    pub sslmode: SslMode,
    /// PEM file with trusted roots (`database.sslrootcert`).
    pub sslrootcert: Option<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// `application_name` reported to the server.
    pub application_name: String,
}

/// Session settings that make text output of every type stable and
/// independent of the server's defaults, so one set of type decoders serves
/// snapshot (COPY) and streaming (pgoutput) alike.
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("datestyle", "ISO"),
    ("timezone", "UTC"),
    ("intervalstyle", "iso_8601"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("lc_monetary", "C"),
    ("client_encoding", "UTF8"),
];

/// The same settings as `SET` statements.
pub fn session_sql() -> String {
    SESSION_SETTINGS
        .iter()
        .map(|(k, v)| format!("SET {k} = '{v}';"))
        .collect()
}

/// A certificate verifier that accepts anything: `prefer` and `require` only
/// promise encryption, as with libpq.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Verifies the chain but not the host name (`verify-ca`).
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl ConnParams {
    /// The rustls configuration for this connection's `sslmode`, or None
    /// for `disable`.
    pub fn tls_config(&self) -> Result<Option<Arc<ClientConfig>>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("building the TLS configuration")?;
        let config = match self.sslmode {
            SslMode::Disable => return Ok(None),
            SslMode::Prefer | SslMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                .with_no_client_auth(),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let mut roots = RootCertStore::empty();
                match &self.sslrootcert {
                    Some(path) => {
                        // Not an io::Error in the chain: a bad file is not worth a retry.
                        let pem = std::fs::read(path).map_err(|e| {
                            anyhow::anyhow!("reading database.sslrootcert file '{path}': {e}")
                        })?;
                        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                            let cert = cert.map_err(|e| {
                                anyhow::anyhow!(
                                    "database.sslrootcert '{path}' is not valid PEM: {e}"
                                )
                            })?;
                            roots.add(cert).with_context(|| {
                                format!("database.sslrootcert '{path}' holds a bad certificate")
                            })?;
                        }
                        if roots.is_empty() {
                            bail!("database.sslrootcert '{path}' holds no certificate");
                        }
                    }
                    None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                }
                let roots = Arc::new(roots);
                if self.sslmode == SslMode::VerifyFull {
                    builder.with_root_certificates(roots).with_no_client_auth()
                } else {
                    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                        roots,
                        provider.clone(),
                    )
                    .build()
                    .context("building the certificate verifier")?;
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
                        .with_no_client_auth()
                }
            }
        };
        Ok(Some(Arc::new(config)))
    }

    /// A tokio-postgres configuration (for catalog and snapshot sessions).
    pub fn pg_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(&self.application_name)
            .connect_timeout(self.connect_timeout)
            .ssl_mode(match self.sslmode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
        if let Some(p) = &self.password {
            c.password(p);
        }
        c
    }

    /// Opens a normal SQL session with Sluice's session settings applied.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        let cfg = self.pg_config();
        let what = || {
            format!(
                "connecting to PostgreSQL at {}:{} database '{}' as '{}'",
                self.host, self.port, self.dbname, self.user
            )
        };
        let client = match self.tls_config()? {
            None => {
                let (client, conn) = cfg
                    .connect(tokio_postgres::NoTls)
                    .await
                    .with_context(what)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("PostgreSQL connection closed: {e}");
                    }
                });
                client
            }
            Some(tls) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
                let (client, conn) = cfg.connect(tls).await.map_err(|e| {
                    // tokio-postgres reports a server without TLS only in
                    // words; give it a type, as it is no reason to retry.
                    let refused = std::iter::successors(
                        Some(&e as &(dyn std::error::Error + 'static)),
                        |c| c.source(),
                    )
                    .any(|c| c.to_string().contains("server does not support TLS"));
                    if refused {
                        anyhow::Error::new(crate::error::TlsRefused(format!(
                            "PostgreSQL at {}:{} does not support TLS but database.sslmode={} requires it: enable ssl on the server or set database.sslmode=prefer",
                            self.host,
                            self.port,
                            self.sslmode.name()
                        )))
                    } else {
                        anyhow::Error::new(e)
                    }
                    .context(what())
                })?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!("PostgreSQL connection closed: {e}");
                    }
                });
                client
            }
        };
        client
            .batch_execute(&session_sql())
            .await
            .context("applying session settings")?;
        Ok(client)
    }
}
