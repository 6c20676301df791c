//! The source database from the environment, as ECS passes it to the one-off jobs: a URL, or
//! the parts (the user and password injected from Secrets Manager), so a password never
//! appears in argv; and the TLS settings that apply when a connection string has none.

use super::TlsSettings;
use super::config::PgConfig;
use super::error::PgError;
use super::sslmode::SslMode;

const ENV_URL: &str = "DQETL_PG_URL";
pub const ENV_SSLMODE: &str = "DQETL_PG_SSLMODE";
pub const ENV_SSLROOTCERT: &str = "DQETL_PG_SSLROOTCERT";

impl TlsSettings {
    /// `DQETL_PG_SSLMODE` and `DQETL_PG_SSLROOTCERT` (unset or empty: no setting).
    pub fn from_env() -> Result<TlsSettings, PgError> {
        TlsSettings::from_vars(&|name| std::env::var(name).ok())
    }

    fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Result<TlsSettings, PgError> {
        let set = |name| var(name).filter(|v| !v.is_empty());
        Ok(TlsSettings {
            mode: set(ENV_SSLMODE)
                .map(|v| SslMode::parse(&v, ENV_SSLMODE))
                .transpose()?,
            root_cert: set(ENV_SSLROOTCERT).map(Into::into),
        })
    }
}

impl PgConfig {
    /// The source database: `url` (a `--pg-url` flag) or `DQETL_PG_URL` first; else
    /// `DQETL_PG_HOST` with `DQETL_PG_PORT` (5432), `DQETL_PG_DATABASE` (postgres),
    /// `DQETL_PG_USER` (postgres) and `DQETL_PG_PASSWORD`. TLS: the URL's `sslmode` and
    /// `sslrootcert`, else `DQETL_PG_SSLMODE` and `DQETL_PG_SSLROOTCERT`, else `prefer`.
    pub fn from_env(url: Option<&str>) -> Result<PgConfig, PgError> {
        PgConfig::from_vars(url, &|name| std::env::var(name).ok())
    }

    fn from_vars(
        url: Option<&str>,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PgConfig, PgError> {
        let defaults = TlsSettings::from_vars(var)?;
        if let Some(url) = url {
            return PgConfig::parse(url, "the source database URL", &defaults);
        }
        if let Some(url) = var(ENV_URL) {
            return PgConfig::parse(&url, ENV_URL, &defaults);
        }
        let host = var("DQETL_PG_HOST").ok_or(PgError::NoSource)?;
        let mut config = tokio_postgres::Config::new();
        config.host(&host);
        if let Some(port) = var("DQETL_PG_PORT") {
            config.port(port.parse().map_err(|_| PgError::InvalidPort {
                variable: "DQETL_PG_PORT",
                value: port.clone(),
            })?);
        }
        config.dbname(var("DQETL_PG_DATABASE").as_deref().unwrap_or("postgres"));
        config.user(var("DQETL_PG_USER").as_deref().unwrap_or("postgres"));
        if let Some(password) = var("DQETL_PG_PASSWORD") {
            config.password(password);
        }
        Ok(PgConfig::new(config, defaults))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use super::*;

    fn from(url: Option<&str>, vars: &[(&str, &str)]) -> Result<PgConfig, PgError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PgConfig::from_vars(url, &|name| vars.get(name).cloned())
    }

    #[test]
    fn the_parts_make_a_config_with_libpq_defaults() {
        let pg = from(
            None,
            &[
                ("DQETL_PG_HOST", "db.internal"),
                ("DQETL_PG_PASSWORD", "s3cret-pw"),
            ],
        )
        .unwrap();
        assert_eq!(pg.describe(), "db.internal:5432/postgres");
        assert_eq!(pg.tokio().get_user(), Some("postgres"));
        assert_eq!(pg.tokio().get_password(), Some(&b"s3cret-pw"[..]));
        assert_eq!(pg.ssl_mode(), SslMode::Prefer);
        assert!(!format!("{pg:?}").contains("s3cret-pw"));
    }

    #[test]
    fn the_parts_take_the_tls_settings_from_the_environment() {
        let pg = from(
            None,
            &[
                ("DQETL_PG_HOST", "rds.example"),
                ("DQETL_PG_PORT", "5433"),
                ("DQETL_PG_DATABASE", "etldb"),
                ("DQETL_PG_USER", "app"),
                ("DQETL_PG_SSLMODE", "require"),
                ("DQETL_PG_SSLROOTCERT", "/etc/rds.pem"),
            ],
        )
        .unwrap();
        assert_eq!(pg.describe(), "rds.example:5433/etldb");
        assert_eq!(pg.tokio().get_user(), Some("app"));
        assert_eq!(pg.ssl_mode(), SslMode::Require);
        assert_eq!(pg.tls().root_cert, Some(PathBuf::from("/etc/rds.pem")));
    }

    #[test]
    fn a_url_comes_first_then_dqetl_pg_url_then_the_parts() {
        let vars = [
            ("DQETL_PG_URL", "postgres://u@from-env/a"),
            ("DQETL_PG_HOST", "from-parts"),
        ];
        let pg = from(Some("postgres://u@from-flag/b"), &vars).unwrap();
        assert_eq!(pg.describe(), "from-flag:5432/b");
        let pg = from(None, &vars).unwrap();
        assert_eq!(pg.describe(), "from-env:5432/a");
    }

    #[test]
    fn the_urls_sslmode_wins_over_dqetl_pg_sslmode() {
        let vars = [("DQETL_PG_SSLMODE", "require")];
        let pg = from(Some("postgres://u@h/db?sslmode=disable"), &vars).unwrap();
        assert_eq!(pg.ssl_mode(), SslMode::Disable);
        let pg = from(Some("postgres://u@h/db"), &vars).unwrap();
        assert_eq!(pg.ssl_mode(), SslMode::Require);
    }

    #[test]
    fn an_empty_sslmode_variable_is_no_setting() {
        let pg = from(Some("postgres://u@h/db"), &[("DQETL_PG_SSLMODE", "")]).unwrap();
        assert_eq!(pg.ssl_mode(), SslMode::Prefer);
    }

    #[test]
    fn wrong_values_are_named_and_nothing_set_says_what_to_set() {
        let err = from(None, &[("DQETL_PG_HOST", "h"), ("DQETL_PG_SSLMODE", "on")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DQETL_PG_SSLMODE") && err.contains("\"on\""),
            "{err}"
        );
        let err = from(None, &[("DQETL_PG_HOST", "h"), ("DQETL_PG_PORT", "54x")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DQETL_PG_PORT") && err.contains("\"54x\""),
            "{err}"
        );
        let err = from(None, &[]).unwrap_err().to_string();
        assert!(
            err.contains("DQETL_PG_URL") && err.contains("DQETL_PG_HOST"),
            "{err}"
        );
    }
}
