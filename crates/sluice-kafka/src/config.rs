//! Kafka client settings from Kafka Connect worker properties.
//!
//! [`KafkaConfig::from_worker_props`] reads the keys a Connect worker file
//! uses (`bootstrap.servers`, `security.protocol`, `sasl.*`, `ssl.*`,
//! `producer.*`, `consumer.*`, `admin.*`) and turns them into librdkafka
//! settings. Secrets (passwords, private keys, the JAAS line) are kept apart
//! and never shown by `Debug`, errors or logs.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;
use sluice_core::config::Props;

use crate::error::{Error, Result};

/// The Kafka Connect default for `bootstrap.servers`.
pub const DEFAULT_BOOTSTRAP: &str = "localhost:9092";

/// Which client a setting is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole {
    /// The source-side producer.
    Producer,
    /// A sink task's consumer.
    Consumer,
    /// The admin client.
    Admin,
}

impl ClientRole {
    fn name(self) -> &'static str {
        match self {
            ClientRole::Producer => "producer",
            ClientRole::Consumer => "consumer",
            ClientRole::Admin => "admin client",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            ClientRole::Producer => "producer.",
            ClientRole::Consumer => "consumer.",
            ClientRole::Admin => "admin.",
        }
    }

    /// Keys Sluice sets itself for this client: a `producer.*`,
    /// `consumer.*` or `admin.*` override of one of them is refused.
    pub fn reserved_keys(self) -> &'static [&'static str] {
        match self {
            ClientRole::Producer => &[
                "enable.idempotence",
                "acks",
                "request.required.acks",
                "partitioner",
                "max.in.flight.requests.per.connection",
                "max.in.flight",
                "transactional.id",
            ],
            ClientRole::Consumer => &[
                "group.id",
                "enable.auto.commit",
                "enable.auto.offset.store",
                "enable.partition.eof",
            ],
            ClientRole::Admin => &[],
        }
    }
}

/// Keys no client-specific override may change: they describe the cluster
/// and how to reach it, and are set once at the worker level.
const SHARED_RESERVED: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.jaas.config",
    "sasl.username",
    "sasl.password",
];

/// Java-only settings with no librdkafka meaning (serializers, interceptors):
/// refused in overrides, since the converters already produce bytes.
const JAVA_ONLY: &[&str] = &[
    "key.serializer",
    "value.serializer",
    "key.deserializer",
    "value.deserializer",
    "interceptor.classes",
    "partitioner.class",
    "metric.reporters",
];

/// Java names of client settings whose librdkafka name differs.
const RENAMED: &[(&str, &str)] = &[
    ("max.request.size", "message.max.bytes"),
    ("delivery.timeout.ms", "message.timeout.ms"),
    ("buffer.memory", "queue.buffering.max.kbytes"),
    ("max.poll.records", ""),
];

/// Whether a librdkafka setting holds a secret.
pub fn is_secret_key(key: &str) -> bool {
    key.contains("password")
        || key.contains("secret")
        || key.ends_with(".pem") && key.contains("key")
        || key == "sasl.jaas.config"
        || key == "sasl.oauthbearer.config"
}

/// Kafka client settings for the worker's producer, consumers and admin
/// client, built from worker properties.
#[derive(Clone)]
pub struct KafkaConfig {
    bootstrap: String,
    /// librdkafka settings shared by every client, secrets included.
    common: BTreeMap<String, String>,
    producer: BTreeMap<String, String>,
    consumer: BTreeMap<String, String>,
    admin: BTreeMap<String, String>,
    /// How long client construction waits for the brokers to answer.
    pub connect_timeout: Duration,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Masked<'a>(&'a BTreeMap<String, String>);
        impl fmt::Debug for Masked<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(self.0.iter().map(|(k, v)| {
                        let shown: &str = if is_secret_key(k) { "[hidden]" } else { v };
                        (k, shown)
                    }))
                    .finish()
            }
        }
        f.debug_struct("KafkaConfig")
            .field("bootstrap", &self.bootstrap)
            .field("common", &Masked(&self.common))
            .field("producer", &Masked(&self.producer))
            .field("consumer", &Masked(&self.consumer))
            .field("admin", &Masked(&self.admin))
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl fmt::Display for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = self
            .common
            .get("security.protocol")
            .map(String::as_str)
            .unwrap_or("plaintext");
        write!(f, "Kafka at {} ({proto})", self.bootstrap)
    }
}

/// Credentials from a `sasl.jaas.config` line.
#[derive(Clone, PartialEq, Eq)]
pub struct JaasLogin {
    /// The login module class, e.g.
    /// `org.apache.kafka.common.security.plain.PlainLoginModule`.
    pub module: String,
    /// `username`.
    pub username: String,
    /// `password`.
    pub password: String,
}

impl fmt::Debug for JaasLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JaasLogin")
            .field("module", &self.module)
            .field("username", &self.username)
            .field("password", &"[hidden]")
            .finish()
    }
}

/// Parses a `sasl.jaas.config` value of the PLAIN or SCRAM login module:
/// `<class> required username="..." password="...";`. Values may be quoted
/// (with `\"` and `\\` escapes) or bare. Errors never quote the value.
pub fn parse_jaas(value: &str) -> Result<JaasLogin> {
    let bad = |m: &str| Error::config("sasl.jaas.config", m.to_string());
    let mut chars = value.trim().chars().peekable();
    let word = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut w = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || c == '=' || c == ';' || c == '"' {
                break;
            }
            w.push(c);
            chars.next();
        }
        w
    };
    let module = word(&mut chars);
    if module.is_empty() {
        return Err(bad(
            "empty; expected `<LoginModule class> required username=\"...\" password=\"...\";`",
        ));
    }
    let flag = word(&mut chars);
    if !matches!(
        flag.as_str(),
        "required" | "requisite" | "sufficient" | "optional"
    ) {
        return Err(bad(
            "expected a control flag (`required`) after the login module class",
        ));
    }
    let mut opts: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let key = word(&mut chars);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if key.is_empty() {
            match chars.next() {
                Some(';') | None => break,
                Some(_) => return Err(bad("malformed option; expected key=value")),
            }
        }
        if chars.next() != Some('=') {
            return Err(bad(&format!("option `{key}` has no `=value`")));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let val = if chars.peek() == Some(&'"') {
            chars.next();
            let mut v = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => v.push(c),
                        None => return Err(bad(&format!("unterminated quoted value of `{key}`"))),
                    },
                    Some(c) => v.push(c),
                    None => return Err(bad(&format!("unterminated quoted value of `{key}`"))),
                }
            }
            v
        } else {
            word(&mut chars)
        };
        opts.insert(key, val);
    }
    if chars.any(|c| !c.is_whitespace()) {
        return Err(bad(
            "text after the closing `;` (only one login module is supported)",
        ));
    }
    let simple = module.rsplit('.').next().unwrap_or(&module);
    if simple != "PlainLoginModule" && simple != "ScramLoginModule" {
        return Err(bad(&format!(
            "login module {module} is not supported; use PlainLoginModule or ScramLoginModule"
        )));
    }
    let take = |opts: &mut BTreeMap<String, String>, k: &str| {
        opts.remove(k)
            .ok_or_else(|| bad(&format!("{simple} needs a `{k}` option")))
    };
    let username = take(&mut opts, "username")?;
    let password = take(&mut opts, "password")?;
    Ok(JaasLogin {
        module,
        username,
        password,
    })
}

impl KafkaConfig {
    /// A plaintext configuration for `bootstrap` (tests, local brokers).
    pub fn new(bootstrap: impl Into<String>) -> KafkaConfig {
        let bootstrap = bootstrap.into();
        let mut common = BTreeMap::new();
        common.insert("bootstrap.servers".to_string(), bootstrap.clone());
        KafkaConfig {
            bootstrap,
            common,
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
            admin: BTreeMap::new(),
            connect_timeout: Duration::from_secs(30),
        }
    }

    /// Reads Kafka Connect worker properties. Keys unrelated to Kafka
    /// clients (converters, storage topics, REST, ...) are ignored.
    pub fn from_worker_props(props: &Props) -> Result<KafkaConfig> {
        let bootstrap = props
            .get("bootstrap.servers")
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_else(|| DEFAULT_BOOTSTRAP.to_string());
        if bootstrap.is_empty() {
            return Err(Error::config("bootstrap.servers", "is empty"));
        }
        let mut cfg = KafkaConfig::new(bootstrap);
        security(props, &mut cfg.common)?;
        for (key, value) in props.iter().filter(|(k, _)| k.starts_with("ssl.")) {
            ssl(key, value, props, &mut cfg.common)?;
        }
        for role in [
            ClientRole::Producer,
            ClientRole::Consumer,
            ClientRole::Admin,
        ] {
            let prefix = role.prefix();
            let mut out = BTreeMap::new();
            for (key, value) in props {
                let Some(name) = key.strip_prefix(prefix) else {
                    continue;
                };
                passthrough(role, key, name, value, &mut out)?;
            }
            *cfg.map_mut(role) = out;
        }
        Ok(cfg)
    }

    /// `bootstrap.servers`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    fn map_mut(&mut self, role: ClientRole) -> &mut BTreeMap<String, String> {
        match role {
            ClientRole::Producer => &mut self.producer,
            ClientRole::Consumer => &mut self.consumer,
            ClientRole::Admin => &mut self.admin,
        }
    }

    fn map(&self, role: ClientRole) -> &BTreeMap<String, String> {
        match role {
            ClientRole::Producer => &self.producer,
            ClientRole::Consumer => &self.consumer,
            ClientRole::Admin => &self.admin,
        }
    }

    /// Adds a client-specific override as if it were given as
    /// `producer.<key>` / `consumer.<key>` / `admin.<key>` (same checks).
    pub fn set_override(&mut self, role: ClientRole, key: &str, value: &str) -> Result<()> {
        let full = format!("{}{key}", role.prefix());
        let mut out = std::mem::take(self.map_mut(role));
        let r = passthrough(role, &full, key, value, &mut out);
        *self.map_mut(role) = out;
        r
    }

    /// The override of `key` for `role`, if one was given.
    pub fn override_value(&self, role: ClientRole, key: &str) -> Option<&str> {
        self.map(role).get(key).map(String::as_str)
    }

    /// The librdkafka configuration for `role`: shared settings, then
    /// Sluice's `defaults` (overridable), then the user's overrides, then
    /// Sluice's `fixed` settings.
    pub(crate) fn client_config(
        &self,
        role: ClientRole,
        defaults: &[(&str, &str)],
        fixed: &[(&str, &str)],
    ) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.common {
            c.set(k, v);
        }
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in self.map(role) {
            c.set(k, v);
        }
        for (k, v) in fixed {
            c.set(*k, *v);
        }
        c
    }
}

fn security(props: &Props, out: &mut BTreeMap<String, String>) -> Result<()> {
    let protocol = props
        .get("security.protocol")
        .map(|s| s.trim().to_ascii_uppercase())
        .unwrap_or_else(|| "PLAINTEXT".to_string());
    if !matches!(
        protocol.as_str(),
        "PLAINTEXT" | "SSL" | "SASL_PLAINTEXT" | "SASL_SSL"
    ) {
        return Err(Error::config(
            "security.protocol",
            format!("`{protocol}` is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        ));
    }
    out.insert("security.protocol".into(), protocol.to_ascii_lowercase());
    let sasl = protocol.starts_with("SASL_");
    let mechanism = props
        .get("sasl.mechanism")
        .map(|s| s.trim().to_ascii_uppercase());
    if !sasl {
        return Ok(());
    }
    // Kafka's default mechanism is GSSAPI, which Sluice does not support.
    let Some(mechanism) = mechanism else {
        return Err(Error::config(
            "sasl.mechanism",
            format!("is not set: with security.protocol={protocol} Kafka's default is GSSAPI, which Sluice does not support; set PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
        ));
    };
    if !matches!(
        mechanism.as_str(),
        "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512"
    ) {
        return Err(Error::config(
            "sasl.mechanism",
            format!("`{mechanism}` is not supported; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
        ));
    }
    out.insert("sasl.mechanism".into(), mechanism.clone());
    let Some(jaas) = props.get("sasl.jaas.config") else {
        return Err(Error::config(
            "sasl.jaas.config",
            format!("is required with security.protocol={protocol} and sasl.mechanism={mechanism}"),
        ));
    };
    let login = parse_jaas(jaas)?;
    let simple = login.module.rsplit('.').next().unwrap_or_default();
    let expected = if mechanism == "PLAIN" {
        "PlainLoginModule"
    } else {
        "ScramLoginModule"
    };
    if simple != expected {
        return Err(Error::config(
            "sasl.jaas.config",
            format!("sasl.mechanism={mechanism} needs {expected}, not {simple}"),
        ));
    }
    out.insert("sasl.username".into(), login.username);
    out.insert("sasl.password".into(), login.password);
    Ok(())
}

/// Maps one Java `ssl.*` setting onto librdkafka.
fn ssl(key: &str, value: &str, props: &Props, out: &mut BTreeMap<String, String>) -> Result<()> {
    let store_type = |k: &str, location: &str| -> String {
        match props.get(k) {
            Some(t) => t.trim().to_ascii_uppercase(),
            None => {
                let l = location.to_ascii_lowercase();
                if l.ends_with(".pem") || l.ends_with(".crt") || l.ends_with(".cer") {
                    "PEM".into()
                } else if l.ends_with(".p12") || l.ends_with(".pfx") {
                    "PKCS12".into()
                } else {
                    "JKS".into()
                }
            }
        }
    };
    let mut set = |k: &str, v: &str| {
        out.insert(k.to_string(), v.to_string());
    };
    match key {
        "ssl.truststore.location" => match store_type("ssl.truststore.type", value).as_str() {
            "PEM" => set("ssl.ca.location", value),
            t => {
                return Err(Error::config(
                    key,
                    format!("a {t} truststore cannot be read by librdkafka; convert it to PEM (ssl.truststore.type=PEM)"),
                ))
            }
        },
        "ssl.truststore.certificates" => set("ssl.ca.pem", value),
        "ssl.keystore.location" => match store_type("ssl.keystore.type", value).as_str() {
            "PKCS12" => set("ssl.keystore.location", value),
            "PEM" => {
                set("ssl.certificate.location", value);
                set("ssl.key.location", value);
            }
            t => {
                return Err(Error::config(
                    key,
                    format!("a {t} keystore cannot be read by librdkafka; use PKCS12 or PEM (ssl.keystore.type)"),
                ))
            }
        },
        "ssl.keystore.password" => set("ssl.keystore.password", value),
        "ssl.keystore.certificate.chain" => set("ssl.certificate.pem", value),
        "ssl.keystore.key" => set("ssl.key.pem", value),
        "ssl.key.password" => set("ssl.key.password", value),
        "ssl.cipher.suites" => set("ssl.cipher.suites", value),
        "ssl.endpoint.identification.algorithm" => {
            let v = if value.trim().is_empty() {
                "none"
            } else if value.trim().eq_ignore_ascii_case("https") {
                "https"
            } else {
                return Err(Error::config(key, format!("`{value}` is not `https` or empty")));
            };
            set("enable.ssl.certificate.verification", "true");
            set("ssl.endpoint.identification.algorithm", v);
        }
        // Types are read with their locations; the truststore needs no
        // password in PEM form; the JVM-only knobs have no librdkafka
        // equivalent (OpenSSL picks protocols and algorithms itself).
        "ssl.truststore.type"
        | "ssl.keystore.type"
        | "ssl.truststore.password"
        | "ssl.protocol"
        | "ssl.enabled.protocols"
        | "ssl.keymanager.algorithm"
        | "ssl.trustmanager.algorithm"
        | "ssl.secure.random.implementation"
        | "ssl.provider" => {
            tracing::debug!(key, "Java-only SSL setting has no librdkafka equivalent; ignored");
        }
        _ => {
            return Err(Error::config(
                key,
                "unknown SSL setting (give librdkafka SSL settings as producer./consumer./admin. overrides)",
            ))
        }
    }
    Ok(())
}

fn passthrough(
    role: ClientRole,
    full: &str,
    name: &str,
    value: &str,
    out: &mut BTreeMap<String, String>,
) -> Result<()> {
    if role.reserved_keys().contains(&name) || SHARED_RESERVED.contains(&name) {
        return Err(Error::config(
            full,
            format!(
                "Sluice sets `{name}` itself for the {} and does not allow overriding it",
                role.name()
            ),
        ));
    }
    if JAVA_ONLY.contains(&name) {
        return Err(Error::config(
            full,
            "is a Java client class setting with no meaning for Sluice",
        ));
    }
    let name = match RENAMED.iter().find(|(java, _)| *java == name) {
        Some((_, "")) => {
            tracing::debug!(key = full, "no librdkafka equivalent; ignored");
            return Ok(());
        }
        Some((_, rd)) if *rd == "queue.buffering.max.kbytes" => {
            let bytes: u64 = value
                .trim()
                .parse()
                .map_err(|_| Error::config(full, format!("`{value}` is not a byte count")))?;
            out.insert((*rd).to_string(), (bytes / 1024).max(1).to_string());
            return Ok(());
        }
        Some((_, rd)) => *rd,
        None => name,
    };
    validate(full, name, value)?;
    out.insert(name.to_string(), value.to_string());
    Ok(())
}

/// Checks one setting against librdkafka now, so a misspelt name or a bad
/// value is reported with the worker property that carried it.
fn validate(full: &str, name: &str, value: &str) -> Result<()> {
    let mut c = ClientConfig::new();
    c.set(name, value);
    match c.create_native_config() {
        Ok(_) => Ok(()),
        Err(KafkaError::ClientConfig(_, desc, _, _)) => Err(Error::config(
            full,
            if is_secret_key(name) {
                "invalid value".to_string()
            } else {
                desc
            },
        )),
        Err(e) => Err(Error::config(full, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use sluice_core::config::props_from as props;

    #[test]
    fn jaas_plain_event_hubs_form() {
        let v = r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="$ConnectionString" password="Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=abc+/=";"#;
        let l = parse_jaas(v).unwrap();
        assert_eq!(
            l.module,
            "org.apache.kafka.common.security.plain.PlainLoginModule"
        );
        assert_eq!(l.username, "$ConnectionString");
        assert_eq!(
            l.password,
            "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=abc+/="
        );
        assert!(!format!("{l:?}").contains("SharedAccessKey"));
    }

    #[test]
    fn jaas_scram_bare_escaped_and_multiline() {
        let v = "org.apache.kafka.common.security.scram.ScramLoginModule required\n  username=alice\n  password=\"p\\\"a;s=s\\\\\"\n  tokenauth=false ;";
        let l = parse_jaas(v).unwrap();
        assert_eq!(l.username, "alice");
        assert_eq!(l.password, "p\"a;s=s\\");
        // Without the trailing semicolon too.
        let l = parse_jaas("x.ScramLoginModule required username=\"u\" password=\"p\"").unwrap();
        assert_eq!((l.username.as_str(), l.password.as_str()), ("u", "p"));
    }

    #[test]
    fn jaas_errors_name_the_problem_not_the_secret() {
        for (v, needle) in [
            ("", "empty"),
            ("a.PlainLoginModule username=\"u\" password=\"s3cret\";", "control flag"),
            ("a.PlainLoginModule required username=\"u\";", "password"),
            ("a.PlainLoginModule required username=\"u\" password=\"s3cret", "unterminated"),
            ("com.sun.security.auth.module.Krb5LoginModule required useKeyTab=true password=\"s3cret\";", "not supported"),
            ("a.PlainLoginModule required username=\"u\" password=\"s3cret\"; b.X required;", "after the closing"),
        ] {
            let e = parse_jaas(v).unwrap_err().to_string();
            assert!(e.contains(needle), "{v}: {e}");
            assert!(e.contains("sasl.jaas.config"), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn worker_props_sasl_ssl_to_librdkafka() {
        let p = props(&[
            (
                "bootstrap.servers",
                " ns.servicebus.windows.net:9093 , b2:9093",
            ),
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "PLAIN"),
            (
                "sasl.jaas.config",
                r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="$ConnectionString" password="Endpoint=sb://x/;SharedAccessKey=TOPSECRET";"#,
            ),
            ("ssl.truststore.location", "/etc/ca.pem"),
            ("ssl.truststore.type", "PEM"),
            ("ssl.endpoint.identification.algorithm", ""),
            ("ssl.enabled.protocols", "TLSv1.2,TLSv1.3"),
            ("producer.linger.ms", "20"),
            ("producer.max.request.size", "2000000"),
            ("consumer.max.poll.records", "100"),
            ("consumer.session.timeout.ms", "10000"),
            (
                "key.converter",
                "org.apache.kafka.connect.json.JsonConverter",
            ),
            ("offset.storage.topic", "connect-offsets"),
        ]);
        let cfg = KafkaConfig::from_worker_props(&p).unwrap();
        assert_eq!(cfg.bootstrap(), "ns.servicebus.windows.net:9093,b2:9093");
        assert_eq!(cfg.common["security.protocol"], "sasl_ssl");
        assert_eq!(cfg.common["sasl.mechanism"], "PLAIN");
        assert_eq!(cfg.common["sasl.username"], "$ConnectionString");
        assert_eq!(
            cfg.common["sasl.password"],
            "Endpoint=sb://x/;SharedAccessKey=TOPSECRET"
        );
        assert_eq!(cfg.common["ssl.ca.location"], "/etc/ca.pem");
        assert_eq!(cfg.common["ssl.endpoint.identification.algorithm"], "none");
        assert_eq!(
            cfg.override_value(ClientRole::Producer, "linger.ms"),
            Some("20")
        );
        assert_eq!(
            cfg.override_value(ClientRole::Producer, "message.max.bytes"),
            Some("2000000")
        );
        assert_eq!(
            cfg.override_value(ClientRole::Consumer, "max.poll.records"),
            None
        );
        assert_eq!(
            cfg.override_value(ClientRole::Consumer, "session.timeout.ms"),
            Some("10000")
        );
        for shown in [format!("{cfg:?}"), format!("{cfg}")] {
            assert!(!shown.contains("TOPSECRET"), "{shown}");
        }
        assert!(format!("{cfg:?}").contains("[hidden]"));
        // librdkafka accepts every setting.
        for role in [
            ClientRole::Producer,
            ClientRole::Consumer,
            ClientRole::Admin,
        ] {
            let c = cfg.client_config(role, &[], &[]);
            assert_eq!(c.get("sasl.username"), Some("$ConnectionString"));
        }
    }

    #[test]
    fn static_member_ids_are_per_member_legal_and_opt_in() {
        use crate::consumer::static_member_id;
        let plain = KafkaConfig::from_worker_props(&Props::new()).unwrap();
        assert_eq!(static_member_id(&plain, "connect-s-0"), None);
        let on = KafkaConfig::from_worker_props(&props(&[("consumer.group.instance.id", "dc1")]))
            .unwrap();
        assert_eq!(
            static_member_id(&on, "connect-my sink/x-0").as_deref(),
            Some("dc1-connect-my_sink_x-0")
        );
        let off =
            KafkaConfig::from_worker_props(&props(&[("consumer.group.instance.id", "")])).unwrap();
        assert_eq!(static_member_id(&off, "connect-s-1"), None);
        let blank = KafkaConfig::from_worker_props(&props(&[("consumer.group.instance.id", "  ")]))
            .unwrap();
        assert_eq!(static_member_id(&blank, "connect-s-1"), None);
        assert_eq!(static_member_id(&on, &"x".repeat(250)), None);
    }

    #[test]
    fn defaults_and_scram() {
        let cfg = KafkaConfig::from_worker_props(&Props::new()).unwrap();
        assert_eq!(cfg.bootstrap(), DEFAULT_BOOTSTRAP);
        assert_eq!(cfg.common["security.protocol"], "plaintext");
        let cfg = KafkaConfig::from_worker_props(&props(&[
            ("security.protocol", "sasl_plaintext"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            (
                "sasl.jaas.config",
                "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"u\" password=\"p\";",
            ),
        ]))
        .unwrap();
        assert_eq!(cfg.common["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(cfg.common["sasl.username"], "u");
    }

    #[test]
    fn refusals_name_the_key() {
        let jaas = "x.PlainLoginModule required username=\"u\" password=\"p\";";
        for (kv, key) in [
            (vec![("producer.acks", "1")], "producer.acks"),
            (
                vec![("producer.enable.idempotence", "false")],
                "producer.enable.idempotence",
            ),
            (
                vec![("producer.partitioner", "random")],
                "producer.partitioner",
            ),
            (vec![("consumer.group.id", "g")], "consumer.group.id"),
            (
                vec![("consumer.enable.auto.commit", "true")],
                "consumer.enable.auto.commit",
            ),
            (
                vec![("admin.bootstrap.servers", "x:1")],
                "admin.bootstrap.servers",
            ),
            (
                vec![("producer.sasl.password", "x")],
                "producer.sasl.password",
            ),
            (
                vec![("producer.key.serializer", "x")],
                "producer.key.serializer",
            ),
            (vec![("security.protocol", "TLS")], "security.protocol"),
            (vec![("security.protocol", "SASL_SSL")], "sasl.mechanism"),
            (
                vec![
                    ("security.protocol", "SASL_SSL"),
                    ("sasl.mechanism", "OAUTHBEARER"),
                ],
                "sasl.mechanism",
            ),
            (
                vec![
                    ("security.protocol", "SASL_SSL"),
                    ("sasl.mechanism", "PLAIN"),
                ],
                "sasl.jaas.config",
            ),
            (
                vec![
                    ("security.protocol", "SASL_SSL"),
                    ("sasl.mechanism", "SCRAM-SHA-256"),
                    ("sasl.jaas.config", jaas),
                ],
                "sasl.jaas.config",
            ),
            (
                vec![("ssl.truststore.location", "/x/trust.jks")],
                "ssl.truststore.location",
            ),
            (
                vec![("ssl.keystore.location", "/x/k.jks")],
                "ssl.keystore.location",
            ),
            (vec![("ssl.frobnicate", "1")], "ssl.frobnicate"),
            (vec![("producer.lingr.ms", "5")], "producer.lingr.ms"),
            (vec![("producer.linger.ms", "soon")], "producer.linger.ms"),
            (
                vec![("consumer.auto.offset.reset", "first")],
                "consumer.auto.offset.reset",
            ),
        ] {
            let e = KafkaConfig::from_worker_props(&props(&kv)).unwrap_err();
            match &e {
                Error::Config { key: k, .. } => assert_eq!(k, key, "{e}"),
                other => panic!("{other}"),
            }
            assert!(e.to_string().contains(key), "{e}");
            eprintln!("{e}");
        }
    }

    #[test]
    fn ssl_keystores() {
        let cfg = KafkaConfig::from_worker_props(&props(&[
            ("security.protocol", "SSL"),
            ("ssl.keystore.location", "/k/client.p12"),
            ("ssl.keystore.password", "KSPASS"),
            ("ssl.key.password", "KEYPASS"),
            ("ssl.truststore.certificates", "-----BEGIN CERTIFICATE-----"),
        ]))
        .unwrap();
        assert_eq!(cfg.common["ssl.keystore.location"], "/k/client.p12");
        assert_eq!(cfg.common["ssl.keystore.password"], "KSPASS");
        assert_eq!(cfg.common["ssl.ca.pem"], "-----BEGIN CERTIFICATE-----");
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("KSPASS") && !shown.contains("KEYPASS"),
            "{shown}"
        );
        let cfg = KafkaConfig::from_worker_props(&props(&[
            ("ssl.keystore.location", "/k/client.pem"),
            ("ssl.keystore.type", "PEM"),
        ]))
        .unwrap();
        assert_eq!(cfg.common["ssl.certificate.location"], "/k/client.pem");
        assert_eq!(cfg.common["ssl.key.location"], "/k/client.pem");
    }
}
