//! Which connector config values are secrets, and masking them for display.

use sluice_core::config::{ConfigDef, ConfigType, Props};

/// What a secret value is shown as.
pub const HIDDEN: &str = "[hidden]";

/// Whether `key` holds a secret: a `Password` key of the plugin's
/// definition, or a key whose name says it is one wherever it appears
/// (converter, client override and SASL settings the plugin does not
/// declare).
pub fn is_secret(def: Option<&ConfigDef>, key: &str) -> bool {
    key == "password"
        || key.ends_with(".password")
        || key.ends_with("sasl.jaas.config")
        || key.ends_with("aad.auth.appkey")
        || def.is_some_and(|d| d.key(key).is_some_and(|k| k.ty == ConfigType::Password))
}

/// `props` with every secret value replaced by [`HIDDEN`].
pub fn mask(def: Option<&ConfigDef>, props: &Props) -> Props {
    props
        .iter()
        .map(|(k, v)| {
            let v = if is_secret(def, k) {
                HIDDEN.to_string()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::config::ConfigKey;

    #[test]
    fn password_keys_and_known_secret_names_are_masked() {
        let def = ConfigDef::new(vec![ConfigKey::new(
            "database.password",
            ConfigType::Password,
            "",
        )
        .aliases(&["db.pw"])]);
        let props: Props = [
            ("db.pw", "a"),
            ("producer.override.sasl.jaas.config", "b"),
            ("x.aad.auth.appkey", "c"),
            ("ssl.key.password", "d"),
            ("topic", "t"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let masked = mask(Some(&def), &props);
        assert_eq!(masked["topic"], "t");
        for k in [
            "db.pw",
            "producer.override.sasl.jaas.config",
            "x.aad.auth.appkey",
            "ssl.key.password",
        ] {
            assert_eq!(masked[k], HIDDEN, "{k}");
        }
    }
}
