//! A PostgreSQL connection target: tokio-postgres' settings plus libpq's TLS settings, and the
//! one place clients connect.

use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::TlsSettings;
use super::connstr::split_tls_params;
use super::error::PgError;
use super::sslmode::SslMode;
use super::tls;

/// The connection's driver: poll it (spawn it) for the client to work.
pub type PgConnection =
    tokio_postgres::Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// Where a database is and how to reach it. Its `Debug` output and every error it produces
/// leave out the password.
#[derive(Debug, Clone)]
pub struct PgConfig {
    config: tokio_postgres::Config,
    tls: TlsSettings,
}

impl PgConfig {
    /// `config` with `tls` (its sslmode replaces the one in `config`).
    pub fn new(mut config: tokio_postgres::Config, tls: TlsSettings) -> PgConfig {
        config.ssl_mode(tls.effective_mode().to_tokio());
        PgConfig { config, tls }
    }

    /// A `postgres://` URL or `key=value` connection string; its own `sslmode` and
    /// `sslrootcert` win over `defaults`. `origin` names the string in errors (which never
    /// quote it: it may hold a password).
    pub fn parse(
        conn: &str,
        origin: &'static str,
        defaults: &TlsSettings,
    ) -> Result<PgConfig, PgError> {
        let (rest, tls) = split_tls_params(conn)?;
        let config = rest
            .parse()
            .map_err(|source| PgError::InvalidConnectionString { origin, source })?;
        Ok(PgConfig::new(config, tls.or(defaults)))
    }

    pub fn tokio(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// To add what the connection string leaves out (e.g. a password from the environment).
    pub fn tokio_mut(&mut self) -> &mut tokio_postgres::Config {
        &mut self.config
    }

    pub fn tls(&self) -> &TlsSettings {
        &self.tls
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.tls.effective_mode()
    }

    /// `host:port/database`, for logs and errors.
    pub fn describe(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let database = self
            .config
            .get_dbname()
            .or(self.config.get_user())
            .unwrap_or_default();
        format!("{host}:{port}/{database}")
    }

    /// Connects with TLS as the sslmode says. Spawn the returned connection.
    pub async fn connect(&self) -> Result<(Client, PgConnection), PgError> {
        let mode = self.ssl_mode();
        let connector = tls::connector(mode, self.tls.root_cert.as_deref())?;
        self.config.connect(connector).await.map_err(|source| {
            let target = self.describe();
            if tls::is_certificate_error(&source) {
                PgError::CertificateNotVerified {
                    target,
                    mode,
                    source,
                }
            } else {
                PgError::Connect {
                    target,
                    mode,
                    source,
                }
            }
        })
    }
}

/// Connects to `url` with the TLS it names (`prefer` when it names none), whatever the
/// environment says: for URLs dqetl makes itself, such as its local cluster's.
pub async fn connect_url(url: &str) -> Result<(Client, PgConnection), PgError> {
    PgConfig::parse(url, "the database URL", &TlsSettings::default())?
        .connect()
        .await
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::error_chain::error_chain;

    #[test]
    fn the_connection_string_wins_over_the_defaults() {
        let defaults = TlsSettings {
            mode: Some(SslMode::Require),
            root_cert: Some(PathBuf::from("/env/ca.pem")),
        };
        let pg = PgConfig::parse(
            "postgres://app@db:5433/etldb?sslmode=verify-full",
            "test",
            &defaults,
        )
        .unwrap();
        assert_eq!(pg.ssl_mode(), SslMode::VerifyFull);
        assert_eq!(pg.tls().root_cert, Some(PathBuf::from("/env/ca.pem")));
        assert_eq!(
            pg.tokio().get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(pg.describe(), "db:5433/etldb");

        let pg = PgConfig::parse("host=db dbname=etldb", "test", &defaults).unwrap();
        assert_eq!(pg.ssl_mode(), SslMode::Require);
        let pg = PgConfig::parse("host=db dbname=etldb", "test", &TlsSettings::default()).unwrap();
        assert_eq!(pg.ssl_mode(), SslMode::Prefer);
        assert_eq!(
            pg.tokio().get_ssl_mode(),
            tokio_postgres::config::SslMode::Prefer
        );
    }

    #[test]
    fn neither_debug_output_nor_errors_show_the_password() {
        let pg = PgConfig::parse(
            "postgres://app:s3cret-pw@db/etldb?sslmode=disable",
            "DQETL_PG_URL",
            &TlsSettings::default(),
        )
        .unwrap();
        assert!(!format!("{pg:?}").contains("s3cret-pw"));
        assert!(!pg.describe().contains("s3cret-pw"));
        let err = PgConfig::parse(
            "postgres://app:s3cret-pw@db:notaport/etldb",
            "DQETL_PG_URL",
            &TlsSettings::default(),
        )
        .unwrap_err();
        let chain = error_chain(&err);
        assert!(chain.contains("DQETL_PG_URL"), "{chain}");
        assert!(!chain.contains("s3cret-pw"), "{chain}");
    }
}
