//! The connector plugins this binary can run, looked up by `connector.class`
//! the way Kafka Connect does: the full Java class name (case-sensitive) or
//! an alias (case-insensitive).

use std::sync::Arc;

use sluice_core::config::ConfigError;
use sluice_core::connector::ConnectorPlugin;

/// The available connector plugins.
#[derive(Clone, Default)]
pub struct Registry {
    plugins: Vec<Arc<dyn ConnectorPlugin>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.plugins.iter().map(|p| p.class()))
            .finish()
    }
}

impl Registry {
    /// A registry holding `plugins`.
    pub fn new(plugins: Vec<Arc<dyn ConnectorPlugin>>) -> Self {
        Registry { plugins }
    }

    /// Adds a plugin.
    pub fn register(&mut self, plugin: Arc<dyn ConnectorPlugin>) {
        self.plugins.push(plugin);
    }

    /// The registered plugins, in registration order.
    pub fn plugins(&self) -> &[Arc<dyn ConnectorPlugin>] {
        &self.plugins
    }

    /// The plugin named by a `connector.class` value.
    pub fn lookup(&self, class: &str) -> Result<Arc<dyn ConnectorPlugin>, ConfigError> {
        let class = class.trim();
        let by_class = self.plugins.iter().find(|p| p.class() == class);
        let found = by_class.or_else(|| {
            self.plugins
                .iter()
                .find(|p| p.aliases().iter().any(|a| a.eq_ignore_ascii_case(class)))
        });
        found.cloned().ok_or_else(|| {
            let available: Vec<String> = self
                .plugins
                .iter()
                .map(|p| {
                    if p.aliases().is_empty() {
                        p.class().to_string()
                    } else {
                        format!("{} (aliases: {})", p.class(), p.aliases().join(", "))
                    }
                })
                .collect();
            ConfigError::new(
                "connector.class",
                Some(class),
                format!(
                    "no connector plugin has this class name or alias; available connectors are: {}",
                    if available.is_empty() {
                        "none".to_string()
                    } else {
                        available.join("; ")
                    }
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_are_exact_aliases_are_not() {
        let reg = Registry::new(vec![crate::file_sink::plugin()]);
        let class = "org.apache.kafka.connect.file.FileStreamSinkConnector";
        assert_eq!(reg.lookup(class).expect("class").class(), class);
        assert_eq!(reg.lookup("FILE").expect("alias").class(), class);
        assert_eq!(reg.lookup("FileStreamSink").expect("alias").class(), class);
        let err = reg
            .lookup("org.apache.kafka.connect.file.filestreamsinkconnector")
            .err()
            .expect("class names are case-sensitive")
            .to_string();
        assert!(err.contains("'connector.class'"), "{err}");
        assert!(err.contains(class), "lists what is available: {err}");
    }

    #[test]
    fn empty_registry_says_so() {
        let err = Registry::default()
            .lookup("x")
            .err()
            .expect("empty")
            .to_string();
        assert!(err.contains("none"), "{err}");
    }
}
