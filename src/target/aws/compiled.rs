//! The config as deploy ships it: the raw tables.yaml (baked into the image and uploaded for audit),
//! the validated spec (table names and lake locations for Athena and status), and the compiled
//! DMS table mappings (a stack parameter) and source DDL (uploaded next to the config).

use std::path::{Path, PathBuf};

use crate::config::compile::{ddl, dms_mappings, to_pretty_json};
use crate::config::spec::ConfigSpec;
use crate::config::{LoadContext, load_spec};
use crate::target::aws::error::AwsError;

/// Key of the uploaded config in the assets bucket (the template's ConfigS3Key default).
pub const CONFIG_KEY: &str = "config/tables.yaml";
/// Keys of the compiled files next to it.
pub const DDL_KEY: &str = "config/compiled/create_tables.sql";
pub const DMS_MAPPINGS_KEY: &str = "config/compiled/dms_table_mappings.json";

/// A loaded, validated and compiled config.
#[derive(Debug, Clone)]
pub struct CompiledConfig {
    pub path: PathBuf,
    pub raw: Vec<u8>,
    pub spec: ConfigSpec,
    pub ddl: String,
    pub dms_mappings: String,
}

impl CompiledConfig {
    /// Loads and validates the config (placeholders resolved for this stack and account) and
    /// compiles the DMS mappings and the DDL.
    pub fn load(path: &Path, stack: &str, account: &str) -> Result<Self, AwsError> {
        let config_err = |source| AwsError::Config {
            path: path.to_path_buf(),
            source,
        };
        let raw = std::fs::read(path).map_err(|e| config_err(Box::new(e)))?;
        let ctx = LoadContext {
            stack_name: stack.to_string(),
            account_id: Some(account.to_string()),
        };
        let spec = load_spec(path, &ctx).map_err(|e| config_err(Box::new(e)))?;
        Ok(CompiledConfig {
            path: path.to_path_buf(),
            raw,
            ddl: ddl(&spec),
            // The stack parameter carries the same document `dqetl compile` writes.
            dms_mappings: to_pretty_json(&dms_mappings(&spec)),
            spec,
        })
    }

    /// The files uploaded to the assets bucket: (key, bytes, content type).
    pub fn assets(&self) -> Vec<(&'static str, Vec<u8>, &'static str)> {
        vec![
            (CONFIG_KEY, self.raw.clone(), "application/x-yaml"),
            (DDL_KEY, self.ddl.clone().into_bytes(), "application/sql"),
            (
                DMS_MAPPINGS_KEY,
                self.dms_mappings.clone().into_bytes(),
                "application/json",
            ),
        ]
    }
}

/// The config error inside an error, when the config is what failed (commands exit 2 on those).
pub fn config_error(e: AwsError) -> Result<crate::config::ConfigError, AwsError> {
    match e {
        AwsError::Config { path, source } => {
            match source.downcast::<crate::config::ConfigError>() {
                Ok(config) => Ok(*config),
                Err(source) => Err(AwsError::Config { path, source }),
            }
        }
        other => Err(other),
    }
}

/// An error for a command edge: a config error stays a `ConfigError` (exit code 2).
pub fn command_error(e: AwsError) -> anyhow::Error {
    match config_error(e) {
        Ok(config) => anyhow::Error::new(config),
        Err(other) => anyhow::Error::new(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_config_surfaces_as_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tables.yaml");
        std::fs::write(&path, "tables:\n  - name: t\n    primary_key: id\n    schema:\n      - {name: id, type: nonsense}\n").unwrap();
        let err = CompiledConfig::load(&path, "s", "123456789012").unwrap_err();
        let anyhow_err = command_error(err);
        assert!(
            anyhow_err
                .downcast_ref::<crate::config::ConfigError>()
                .is_some(),
            "{anyhow_err:#}"
        );
        assert!(
            format!("{anyhow_err:#}").contains("nonsense"),
            "{anyhow_err:#}"
        );
    }
}
