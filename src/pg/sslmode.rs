//! libpq's `sslmode` values, including the `verify-*` ones tokio-postgres does not parse.

use std::fmt;

use super::error::PgError;

/// How much TLS a connection insists on, with libpq's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    /// TLS when the server offers it, without verifying its certificate.
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is verified only when a root certificate is given.
    Require,
    /// TLS, the certificate chain verified against the root certificates.
    VerifyCa,
    /// TLS, the chain verified and the certificate issued for the host connected to.
    VerifyFull,
}

impl SslMode {
    /// Every value, in libpq's order of strictness.
    pub const ALL: [SslMode; 5] = [
        SslMode::Disable,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    /// Parses a libpq `sslmode` value found in `origin` (named in the error). libpq's `allow`
    /// (plain first, TLS as a fallback) is not supported: tokio-postgres cannot retry that way.
    pub fn parse(value: &str, origin: &'static str) -> Result<SslMode, PgError> {
        SslMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == value)
            .ok_or_else(|| PgError::InvalidSslMode {
                origin,
                value: value.to_string(),
                expected: expected_values(),
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether to ask for TLS and whether to give up without it.
    /// Verification is the TLS connector's business.
    pub(super) fn to_tokio(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn expected_values() -> String {
    SslMode::ALL.map(SslMode::as_str).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_libpq_value_but_allow_parses_and_prints_back() {
        for (text, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            assert_eq!(SslMode::parse(text, "test").unwrap(), mode);
            assert_eq!(mode.to_string(), text);
        }
    }

    #[test]
    fn a_wrong_value_names_itself_its_origin_and_the_expected_list() {
        for bad in ["allow", "verify_full", "REQUIRE", "", "true"] {
            let err = SslMode::parse(bad, "DQETL_PG_SSLMODE")
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(err.contains("DQETL_PG_SSLMODE"), "{err}");
            assert!(
                err.contains("disable, prefer, require, verify-ca, verify-full"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_default_is_prefer_as_in_libpq() {
        assert_eq!(SslMode::default(), SslMode::Prefer);
    }

    #[test]
    fn every_mode_that_insists_on_tls_tells_tokio_postgres_to_require_it() {
        use tokio_postgres::config::SslMode as Tokio;
        assert_eq!(SslMode::Disable.to_tokio(), Tokio::Disable);
        assert_eq!(SslMode::Prefer.to_tokio(), Tokio::Prefer);
        for mode in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            assert_eq!(mode.to_tokio(), Tokio::Require);
        }
    }
}
