//! The worker keys of the REST server: `listeners` (or the older
//! `rest.host.name`/`rest.port`), Sluice's basic auth keys,
//! `sluice.rest.show.secrets`, `sluice.rest.enabled` and the status page's
//! history (`sluice.rest.history.interval.ms`, `sluice.rest.history.points`).

use sluice_core::config::{split_list, ConfigError, Props};

/// Where the REST server listens when nothing is configured. Kafka Connect
/// listens on every interface; Sluice stays on loopback unless the user
/// opens it, since the API can change and delete connectors.
pub const DEFAULT_LISTENER: &str = "http://127.0.0.1:8083";

/// The REST server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestConfig {
    /// `host:port` to bind.
    pub bind: String,
    /// `user:password` a request must present (basic auth), if any.
    pub basic_auth: Option<String>,
    /// `sluice.rest.show.secrets`: show secret config values unmasked.
    pub show_secrets: bool,
    /// `rest.advertised.host.name`: the host in the worker id.
    pub advertised_host: Option<String>,
    /// `rest.advertised.port`: the port in the worker id.
    pub advertised_port: Option<u16>,
    /// `sluice.rest.enabled` (default true): false runs the worker without
    /// the REST API (it then stops once every task failed, since nothing
    /// could restart them).
    pub enabled: bool,
    /// `metrics.listeners`: a separate `host:port` serving `GET /metrics`
    /// alone, without authentication (the REST listener serves it too).
    pub metrics_bind: Option<String>,
    /// `sluice.rest.history.interval.ms` (default 5000): how often the
    /// status page's history takes a point.
    pub history_interval: std::time::Duration,
    /// `sluice.rest.history.points` (default 720, one hour at the default
    /// interval): how many points the history keeps.
    pub history_points: usize,
}

fn host_port(listener: &str, key: &str) -> Result<String, ConfigError> {
    let bad = |msg: &str| ConfigError::new(key, Some(listener), msg.to_string());
    let rest = match listener.trim().split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(bad(
                "https listeners are not supported by Sluice; use http:// (behind a TLS proxy if needed)",
            ))
        }
        _ => {
            return Err(bad(
                "Expected a listener of the form http://host:port, e.g. http://127.0.0.1:8083",
            ))
        }
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| {
        bad("Expected a listener of the form http://host:port, e.g. http://127.0.0.1:8083")
    })?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port must be a number from 0 to 65535"))?;
    // `http://:8083` is Kafka's spelling of "every interface".
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    if host.contains('/') || host.contains(' ') {
        return Err(bad("the host must be a host name or an IP address"));
    }
    Ok(format!("{host}:{port}"))
}

impl RestConfig {
    /// Reads the REST keys of the worker properties; errors name the key.
    pub fn from_props(props: &Props) -> Result<RestConfig, ConfigError> {
        let bind = match props.get("listeners").filter(|v| !v.trim().is_empty()) {
            Some(v) => {
                let listeners = split_list(v);
                match listeners.as_slice() {
                    [one] => host_port(one, "listeners")?,
                    _ => {
                        return Err(ConfigError::new(
                            "listeners",
                            Some(v),
                            "Sluice serves the REST API on one listener; give exactly one, e.g. http://127.0.0.1:8083",
                        ))
                    }
                }
            }
            None => {
                let host = props
                    .get("rest.host.name")
                    .map(|h| h.trim())
                    .filter(|h| !h.is_empty())
                    .unwrap_or("127.0.0.1");
                let port = match props.get("rest.port") {
                    None => 8083,
                    Some(p) => p.trim().parse::<u16>().map_err(|_| {
                        ConfigError::new(
                            "rest.port",
                            Some(p),
                            "Expected a port number from 0 to 65535",
                        )
                    })?,
                };
                host_port(&format!("http://{host}:{port}"), "rest.host.name")?
            }
        };
        let user = props.get("rest.basic.auth.user").filter(|v| !v.is_empty());
        let password = props
            .get("rest.basic.auth.password")
            .filter(|v| !v.is_empty());
        let basic_auth = match (user, password) {
            (Some(u), Some(p)) => {
                if u.contains(':') {
                    return Err(ConfigError::new(
                        "rest.basic.auth.user",
                        Some(u),
                        "a basic auth user name cannot contain ':'",
                    ));
                }
                Some(format!("{u}:{p}"))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "rest.basic.auth.password",
                    None,
                    "rest.basic.auth.user is set, so a password is required too",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "rest.basic.auth.user",
                    None,
                    "rest.basic.auth.password is set, so a user is required too",
                ))
            }
        };
        let flag = |key: &str, default: bool| match props.get(key) {
            None => Ok(default),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(ConfigError::new(key, Some(v), "Expected true or false")),
            },
        };
        let show_secrets = flag("sluice.rest.show.secrets", false)?;
        let enabled = flag("sluice.rest.enabled", true)?;
        let advertised_host = props
            .get("rest.advertised.host.name")
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty());
        let advertised_port = match props.get("rest.advertised.port") {
            None => None,
            Some(p) => Some(p.trim().parse::<u16>().map_err(|_| {
                ConfigError::new(
                    "rest.advertised.port",
                    Some(p),
                    "Expected a port number from 0 to 65535",
                )
            })?),
        };
        let metrics_bind = match props
            .get("metrics.listeners")
            .filter(|v| !v.trim().is_empty())
        {
            None => None,
            Some(v) => match split_list(v).as_slice() {
                [one] => Some(host_port(one, "metrics.listeners")?),
                _ => {
                    return Err(ConfigError::new(
                        "metrics.listeners",
                        Some(v),
                        "Sluice serves metrics on one extra listener; give exactly one, e.g. http://0.0.0.0:9404",
                    ))
                }
            },
        };
        let history_interval = match props.get("sluice.rest.history.interval.ms") {
            None => crate::runtime::history::DEFAULT_INTERVAL,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(ms) if (100..=3_600_000).contains(&ms) => std::time::Duration::from_millis(ms),
                _ => {
                    return Err(ConfigError::new(
                        "sluice.rest.history.interval.ms",
                        Some(v),
                        "Expected milliseconds from 100 to 3600000 between two points of the status page's history, e.g. 5000",
                    ))
                }
            },
        };
        let history_points = match props.get("sluice.rest.history.points") {
            None => crate::runtime::history::DEFAULT_POINTS,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (2..=100_000).contains(&n) => n,
                _ => {
                    return Err(ConfigError::new(
                        "sluice.rest.history.points",
                        Some(v),
                        "Expected a number of points from 2 to 100000 for the status page's history, e.g. 720",
                    ))
                }
            },
        };
        Ok(RestConfig {
            history_interval,
            history_points,
            metrics_bind,
            bind,
            basic_auth,
            show_secrets,
            advertised_host,
            advertised_port,
            enabled,
        })
    }

    /// The `worker_id` statuses show: `<host>:<port>` as advertised, else
    /// as bound.
    pub fn worker_id(&self, bound: std::net::SocketAddr) -> String {
        let host = self
            .advertised_host
            .clone()
            .unwrap_or_else(|| bound.ip().to_string());
        let port = self.advertised_port.unwrap_or(bound.port());
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use sluice_core::config::props_from as props;

    #[test]
    fn listeners_and_older_keys() {
        assert_eq!(
            RestConfig::from_props(&Props::new()).expect("default").bind,
            "127.0.0.1:8083"
        );
        let c = RestConfig::from_props(&props(&[("listeners", "http://:9000")])).expect("ok");
        assert_eq!(c.bind, "0.0.0.0:9000");
        let c = RestConfig::from_props(&props(&[("rest.port", "9001")])).expect("ok");
        assert_eq!(c.bind, "127.0.0.1:9001");
        let c = RestConfig::from_props(&props(&[
            ("listeners", "http://0.0.0.0:0"),
            ("rest.advertised.host.name", "connect-1"),
        ]))
        .expect("ok");
        let bound: std::net::SocketAddr = "0.0.0.0:40000".parse().expect("addr");
        assert_eq!(c.worker_id(bound), "connect-1:40000");
        for bad in [
            "localhost:8083",
            "https://h:1",
            "http://h:x",
            "http://a:1,http://b:2",
        ] {
            let e = RestConfig::from_props(&props(&[("listeners", bad)]))
                .expect_err(bad)
                .to_string();
            assert!(e.contains("'listeners'"), "{e}");
        }
        let c = RestConfig::from_props(&props(&[("metrics.listeners", "http://:9404")]))
            .expect("metrics");
        assert_eq!(c.metrics_bind.as_deref(), Some("0.0.0.0:9404"));
        let e = RestConfig::from_props(&props(&[("metrics.listeners", "9404")]))
            .expect_err("metrics")
            .to_string();
        assert!(e.contains("'metrics.listeners'"), "{e}");
        let e = RestConfig::from_props(&props(&[("rest.port", "99999")]))
            .expect_err("port")
            .to_string();
        assert!(e.contains("'rest.port'"), "{e}");
        let c = RestConfig::from_props(&Props::new()).expect("default");
        assert_eq!(c.history_interval, std::time::Duration::from_secs(5));
        assert_eq!(c.history_points, 720);
        let c = RestConfig::from_props(&props(&[
            ("sluice.rest.history.interval.ms", "250"),
            ("sluice.rest.history.points", "40"),
        ]))
        .expect("history");
        assert_eq!(c.history_interval, std::time::Duration::from_millis(250));
        assert_eq!(c.history_points, 40);
        for (key, bad) in [
            ("sluice.rest.history.interval.ms", "0"),
            ("sluice.rest.history.interval.ms", "5s"),
            ("sluice.rest.history.points", "1"),
        ] {
            let e = RestConfig::from_props(&props(&[(key, bad)]))
                .expect_err(bad)
                .to_string();
            assert!(e.contains(key) && e.contains("Expected"), "{e}");
        }
    }

    #[test]
    fn basic_auth_needs_both_keys() {
        let e = RestConfig::from_props(&props(&[("rest.basic.auth.user", "u")]))
            .expect_err("half")
            .to_string();
        assert!(e.contains("rest.basic.auth.password"), "{e}");
        let c = RestConfig::from_props(&props(&[
            ("rest.basic.auth.user", "u"),
            ("rest.basic.auth.password", "p"),
        ]))
        .expect("ok");
        assert_eq!(c.basic_auth.as_deref(), Some("u:p"));
    }
}
