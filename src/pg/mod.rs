//! Connections to PostgreSQL: where the database is (a connection string or the `DQETL_PG_*`
//! variables) and how to reach it, with TLS as libpq's `sslmode` means it. Every tokio-postgres
//! client in dqetl connects through [`PgConfig::connect`].
//!
//! | sslmode | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it | not verified |
//! | `require` | always | not verified; with a root certificate given, its chain is (libpq's rule) |
//! | `verify-ca` | always | chain verified against the root certificates |
//! | `verify-full` | always | chain and host name verified |
//!
//! Root certificates: `sslrootcert` (a PEM file, e.g. the RDS global bundle), else the
//! webpki roots and the system's.

mod config;
mod connstr;
mod env;
mod error;
mod sslmode;
mod tls;

pub use config::{PgConfig, PgConnection, connect_url};
pub(crate) use connstr::split_tls_params;
pub use env::{ENV_SSLMODE, ENV_SSLROOTCERT};
pub use error::PgError;
pub use sslmode::SslMode;

/// TLS settings of a connection: what a connection string or the environment says. `None`
/// leaves the choice to the next source (connection string, then environment, then libpq's
/// default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: Option<SslMode>,
    /// A PEM file of the certificates to trust as roots.
    pub root_cert: Option<std::path::PathBuf>,
}

impl TlsSettings {
    /// These settings, each taken from `fallback` where these say nothing.
    pub fn or(self, fallback: &TlsSettings) -> TlsSettings {
        TlsSettings {
            mode: self.mode.or(fallback.mode),
            root_cert: self.root_cert.or_else(|| fallback.root_cert.clone()),
        }
    }

    /// The sslmode in effect: libpq's default is `prefer`.
    pub fn effective_mode(&self) -> SslMode {
        self.mode.unwrap_or_default()
    }
}
