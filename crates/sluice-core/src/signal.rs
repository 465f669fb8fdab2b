//! Signals: instructions to a running source connector (Debezium's
//! `execute-snapshot`, `stop-snapshot`, `pause-snapshot`, `resume-snapshot`,
//! `log`), whichever channel brought them.
//!
//! A source task that takes signals [registers](register) under its
//! connector's name; the worker's REST action hands signals to it through
//! this registry, so neither a signal table nor a Kafka topic is needed.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// One signal, as a row of Debezium's signal table carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// The signal's id (any text; logged with its outcome).
    #[serde(default)]
    pub id: String,
    /// The action: `execute-snapshot`, `stop-snapshot`, `pause-snapshot`,
    /// `resume-snapshot`, `log`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The action's parameters (a JSON object, or null).
    #[serde(default)]
    pub data: serde_json::Value,
}

type Senders = HashMap<String, (u64, mpsc::UnboundedSender<Signal>)>;

fn senders() -> &'static Mutex<Senders> {
    static SENDERS: OnceLock<Mutex<Senders>> = OnceLock::new();
    SENDERS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A task's place in the registry: signals for its connector arrive on
/// `receiver` until it is dropped.
pub struct Registration {
    connector: String,
    token: u64,
    /// Signals sent to the connector.
    pub receiver: mpsc::UnboundedReceiver<Signal>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut s) = senders().lock() {
            // A newer task of the same connector may have taken the place.
            if s.get(&self.connector)
                .is_some_and(|(t, _)| *t == self.token)
            {
                s.remove(&self.connector);
            }
        }
    }
}

/// Registers the running task of `connector` as the receiver of its
/// signals (replacing an earlier registration of the same name).
pub fn register(connector: &str) -> Registration {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let token = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    if let Ok(mut s) = senders().lock() {
        s.insert(connector.to_string(), (token, tx));
    }
    Registration {
        connector: connector.to_string(),
        token,
        receiver: rx,
    }
}

/// Why a signal was not handed over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No task of the connector that takes signals runs in this process.
    #[error("no task of connector '{0}' that takes signals is running in this worker")]
    NotRunning(String),
}

/// Hands `signal` to the running task of `connector`.
pub fn send(connector: &str, signal: Signal) -> Result<(), SendError> {
    let tx = senders()
        .lock()
        .ok()
        .and_then(|s| s.get(connector).map(|(_, tx)| tx.clone()));
    match tx {
        Some(tx) if tx.send(signal).is_ok() => Ok(()),
        _ => Err(SendError::NotRunning(connector.to_string())),
    }
}

/// A fresh id `<prefix>-<unix ms>-<n>`, unique within the process and
/// unlikely to repeat across restarts.
pub fn new_id(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{ms}-{n}")
}

/// Whether a task of `connector` takes signals in this process.
pub fn is_registered(connector: &str) -> bool {
    senders()
        .lock()
        .map(|s| s.contains_key(connector))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_reaches_the_registered_task_and_only_while_it_runs() {
        let s = Signal {
            id: "1".into(),
            kind: "log".into(),
            data: serde_json::json!({"message": "hi"}),
        };
        assert!(send("sig-test", s.clone()).is_err());
        let mut r = register("sig-test");
        send("sig-test", s.clone()).expect("sent");
        assert_eq!(r.receiver.try_recv().ok(), Some(s.clone()));
        // A newer task replaces the older; the older's drop keeps it.
        let mut newer = register("sig-test");
        drop(r);
        send("sig-test", s.clone()).expect("sent to the newer");
        assert_eq!(newer.receiver.try_recv().ok(), Some(s.clone()));
        drop(newer);
        assert_eq!(
            send("sig-test", s),
            Err(SendError::NotRunning("sig-test".into()))
        );
    }

    #[test]
    fn signals_parse_from_the_rest_body() {
        let s: Signal = serde_json::from_str(
            r#"{"type":"execute-snapshot","data":{"data-collections":["public.t"]}}"#,
        )
        .expect("parse");
        assert_eq!(s.kind, "execute-snapshot");
        assert_eq!(s.id, "");
    }
}
