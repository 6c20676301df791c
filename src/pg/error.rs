//! What can go wrong in reaching PostgreSQL. No message holds a password: connection strings are
//! never quoted, only `host:port/database`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid sslmode {value:?} in {origin}: expected one of {expected}")]
    InvalidSslMode {
        origin: &'static str,
        value: String,
        expected: String,
    },

    #[error("{origin} is not a valid PostgreSQL connection string")]
    InvalidConnectionString {
        origin: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("{variable} is not a port: {value:?}")]
    InvalidPort {
        variable: &'static str,
        value: String,
    },

    #[error(
        "no source database: set DQETL_PG_URL, or DQETL_PG_HOST (with DQETL_PG_PORT, DQETL_PG_DATABASE, \
         DQETL_PG_USER and DQETL_PG_PASSWORD)"
    )]
    NoSource,

    #[error("cannot read the root certificates in {path}")]
    RootCertRead {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },

    #[error("{path} holds no PEM certificate to use as a root")]
    RootCertEmpty { path: PathBuf },

    #[error("a certificate in {path} cannot be used as a root")]
    RootCertInvalid {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },

    #[error("cannot set up TLS for sslmode={mode}")]
    TlsSetup {
        mode: super::SslMode,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error(
        "the server certificate of {target} could not be verified (sslmode={mode}); give the certificate \
         of the CA that signed it in sslrootcert or DQETL_PG_SSLROOTCERT"
    )]
    CertificateNotVerified {
        target: String,
        mode: super::SslMode,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error("cannot connect to PostgreSQL at {target} (sslmode={mode})")]
    Connect {
        target: String,
        mode: super::SslMode,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl PgError {
    /// The client library's error underneath, when there is one (to tell a lost connection or a
    /// server's refusal apart).
    pub fn postgres_error(&self) -> Option<&tokio_postgres::Error> {
        match self {
            PgError::InvalidConnectionString { source, .. }
            | PgError::CertificateNotVerified { source, .. }
            | PgError::Connect { source, .. } => Some(source),
            _ => None,
        }
    }
}
