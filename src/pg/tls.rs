//! The TLS side of a connection: a rustls client configuration for each sslmode.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::PgError;
use super::sslmode::SslMode;

/// What the client checks of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verification {
    Nothing,
    /// The chain leads to a trusted root; the names in the certificate are not looked at.
    Chain,
    /// The chain, and the certificate names the host connected to.
    ChainAndHost,
}

impl Verification {
    /// libpq's rules, including its one surprise: `require` verifies the chain when a root
    /// certificate is given.
    pub(super) fn of(mode: SslMode, root_cert_given: bool) -> Verification {
        match mode {
            SslMode::Disable | SslMode::Prefer => Verification::Nothing,
            SslMode::Require if root_cert_given => Verification::Chain,
            SslMode::Require => Verification::Nothing,
            SslMode::VerifyCa => Verification::Chain,
            SslMode::VerifyFull => Verification::ChainAndHost,
        }
    }
}

/// The tokio-postgres TLS connector for `mode`. Roots: the PEM file `root_cert`, else the
/// webpki roots and the system's.
pub(super) fn connector(
    mode: SslMode,
    root_cert: Option<&Path>,
) -> Result<MakeRustlsConnect, PgError> {
    let setup =
        |source: Box<dyn std::error::Error + Send + Sync>| PgError::TlsSetup { mode, source };
    // Both of rustls' providers are compiled in (through other crates), so it cannot pick a
    // process default by itself: name one.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(e.into()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match Verification::of(mode, root_cert.is_some()) {
        Verification::Nothing => Arc::new(AnyCertificate { provider }),
        verification => {
            let roots = Arc::new(root_store(root_cert)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| setup(e.into()))?;
            if verification == Verification::Chain {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn root_store(root_cert: Option<&Path>) -> Result<RootCertStore, PgError> {
    let mut store = RootCertStore::empty();
    let Some(path) = root_cert else {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // Unreadable system certificates leave the webpki roots, which suffice for public CAs.
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::debug!(%error, "skipping system root certificates");
        }
        store.add_parsable_certificates(native.certs);
        return Ok(store);
    };
    let read_error = |source| PgError::RootCertRead {
        path: path.to_path_buf(),
        source,
    };
    for cert in CertificateDer::pem_file_iter(path).map_err(read_error)? {
        store
            .add(cert.map_err(read_error)?)
            .map_err(|source| PgError::RootCertInvalid {
                path: path.to_path_buf(),
                source,
            })?;
    }
    if store.is_empty() {
        return Err(PgError::RootCertEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(store)
}

/// `prefer`, and `require` without a root certificate, mean in libpq: encrypt, but do not
/// authenticate the server (RDS's certificates come from a private CA that no default trust
/// store holds). Safe from eavesdropping, not from a man in the middle; `verify-full` is for
/// that. The handshake signatures are still checked: the server holds the key of the
/// certificate it sent, which SCRAM channel binding builds on.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `verify-ca`: the full webpki verification, minus the name check (the certificate may not
/// name the address connected to). rustls checks the chain before the name, so a name error
/// means the chain was good; every other error stands.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Whether a connection failed because the server's certificate was not accepted. rustls'
/// error travels inside an `io::Error`, whose `source()` skips it, so each link is opened.
pub(super) fn is_certificate_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(err) = current {
        let rustls_error = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if matches!(
            rustls_error,
            Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
        ) {
            return true;
        }
        current = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_verify_modes_and_require_with_a_root_certificate_verify() {
        use Verification::*;
        for (mode, without_root, with_root) in [
            (SslMode::Disable, Nothing, Nothing),
            (SslMode::Prefer, Nothing, Nothing),
            (SslMode::Require, Nothing, Chain),
            (SslMode::VerifyCa, Chain, Chain),
            (SslMode::VerifyFull, ChainAndHost, ChainAndHost),
        ] {
            assert_eq!(Verification::of(mode, false), without_root, "{mode}");
            assert_eq!(Verification::of(mode, true), with_root, "{mode}");
        }
    }

    #[test]
    fn every_mode_builds_a_connector_without_a_root_file() {
        for mode in SslMode::ALL {
            assert!(connector(mode, None).is_ok(), "{mode}");
        }
    }

    #[test]
    fn a_missing_or_certificate_less_root_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let Err(err) = connector(SslMode::VerifyFull, Some(&missing)) else {
            panic!("a missing root file was accepted");
        };
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let Err(err) = connector(SslMode::VerifyCa, Some(&empty)) else {
            panic!("a root file without certificates was accepted");
        };
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );
    }

    #[test]
    fn a_certificate_error_is_found_inside_an_io_error() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        assert!(is_certificate_error(&io));
        let other = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(!is_certificate_error(&other));
    }
}
