//! The provider's configuration (`stackmigrate:*` config keys).

use anyhow::{Context, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::connection::Connection;
use crate::copy::journal::Location;

/// Configuration of the stackmigrate provider.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderConfig {
    /// Where the data comes from (the dev side). Unset fields follow the AWS SDK's chain.
    #[serde(default)]
    pub source: Connection,
    /// Where the data goes (the prod side). Unset fields follow the AWS SDK's chain.
    #[serde(default)]
    pub target: Connection,
    /// Fully qualified name (`org/project/stack`) of the stack whose outputs name the source tables and buckets.
    pub source_stack: Option<String>,
    /// Fully qualified name of the stack whose outputs name the target tables and buckets.
    pub target_stack: Option<String>,
    /// Where rollback journals live: `s3://bucket/prefix` (on the target connection) or `file:///absolute/path` (only this machine can then roll back). Default: a bucket on the target connection that every machine running `pulumi` reaches, created on first use with public access blocked, default encryption, versioning and old versions expiring after 30 days: `stackmigrate-journal-<account>-<region>` on AWS, `stackmigrate-journal` on another S3 endpoint.
    pub journal: Option<String>,
}

/// Keys the engine adds to provider configuration on its own.
const ENGINE_KEYS: &[&str] = &["version", "pluginDownloadURL"];

impl ProviderConfig {
    /// Reads configuration as the engine sends it. Stack config values may arrive as
    /// strings holding JSON (objects, booleans), so those are parsed first.
    pub fn from_props(props: &Map<String, Value>) -> Result<ProviderConfig> {
        let mut normalized = Map::new();
        for (key, value) in props {
            if ENGINE_KEYS.contains(&key.as_str()) {
                continue;
            }
            normalized.insert(key.clone(), parse_embedded_json(value));
        }
        let config: ProviderConfig = serde_path_to_error::deserialize(Value::Object(normalized))
            .map_err(|e| anyhow::anyhow!("stackmigrate:{}: {}", e.path(), e.inner()))?;
        config.journal_setting()?;
        Ok(config)
    }

    /// The keys of `props` (`source`, `target`) that carry credentials, which the state
    /// must hold as secrets even when the stack's config was set without `--secret`.
    pub fn keys_with_credentials(props: &Map<String, Value>) -> Vec<String> {
        props
            .iter()
            .filter(|(_, value)| match parse_embedded_json(value) {
                Value::Object(fields) => Connection::CREDENTIAL_FIELDS
                    .iter()
                    .any(|field| fields.get(*field).is_some_and(|v| !v.is_null())),
                _ => false,
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// The `journal` setting; None when unset (the default lives on the target side).
    pub fn journal_setting(&self) -> Result<Option<Location>> {
        self.journal
            .as_deref()
            .map(|text| Location::parse(text).context("stackmigrate:journal"))
            .transpose()
    }
}

fn parse_embedded_json(value: &Value) -> Value {
    match value {
        Value::String(text) if text.starts_with('{') || text == "true" || text == "false" => {
            match serde_json::from_str::<Value>(text) {
                Ok(parsed) => parse_embedded_json(&parsed),
                Err(_) => value.clone(),
            }
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), parse_embedded_json(v)))
                .collect(),
        ),
        _ => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_strings_from_stack_config_are_parsed() {
        let props = json!({
            "source": "{\"endpoint\":\"http://127.0.0.1:9000\",\"forcePathStyle\":\"true\"}",
            "version": "0.1.0",
            "journal": "file:///tmp/j"
        });
        let config = ProviderConfig::from_props(props.as_object().unwrap()).unwrap();
        assert_eq!(
            config.source.endpoint.as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(config.source.force_path_style, Some(true));
    }

    #[test]
    fn connections_with_credentials_are_found_in_objects_and_json_strings() {
        let props = json!({
            "source": "{\"endpoint\":\"http://127.0.0.1:9000\",\"secretAccessKey\":\"s\"}",
            "target": {"endpoint": "http://127.0.0.1:9001", "sessionToken": "t"},
            "sourceStack": "organization/p/dev",
        });
        let keys = ProviderConfig::keys_with_credentials(props.as_object().unwrap());
        assert_eq!(keys, ["source", "target"]);
        let props = json!({"source": {"endpoint": "http://127.0.0.1:9000"}});
        assert!(ProviderConfig::keys_with_credentials(props.as_object().unwrap()).is_empty());
    }

    #[test]
    fn unknown_keys_and_bad_journals_are_named() {
        let err = ProviderConfig::from_props(json!({"sourceStak": "x"}).as_object().unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("sourceStak"), "{err}");
        let err = ProviderConfig::from_props(json!({"journal": "ftp://x"}).as_object().unwrap())
            .unwrap_err();
        assert!(format!("{err:#}").contains("s3://bucket/prefix"), "{err:#}");
    }
}
