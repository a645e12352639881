//! How the rustls connector checks the server's certificate, for each `sslmode` (see
//! `tls.rs`), and the root certificates it checks against.
//!
//! rustls checks a certificate's chain and its host name together; `verify-ca` wants the
//! chain only, and `prefer` / `require` without a root certificate want no check at all (as
//! libpq does them). Every verifier still checks the handshake's signatures, so the server
//! holds the key of the certificate it shows.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use verrou_core::{Error, Result};

/// A verifier that accepts any certificate: TLS against eavesdropping only, not against a
/// server that pretends to be yours.
pub(crate) fn no_check(provider: &Arc<CryptoProvider>) -> Arc<dyn ServerCertVerifier> {
    Arc::new(NoCheck(Arc::clone(provider)))
}

/// A verifier that wants the certificate chained to `roots`, whatever host it names.
pub(crate) fn chain_only(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>> {
    Ok(Arc::new(ChainOnly(webpki(roots, provider)?)))
}

/// A verifier that wants the certificate chained to `roots` and naming the host connected
/// to.
pub(crate) fn chain_and_name(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>> {
    Ok(webpki(roots, provider)?)
}

/// rustls's own verifier (chain and host name), on `roots`.
fn webpki(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|error| Error::InvalidConfig(format!("PostgreSQL TLS root certificates: {error}")))
}

/// The certificates of the PEM file at `path` (`ssl_root_cert`). Fails with
/// [`Error::InvalidConfig`] naming the file when it can not be read or holds no usable
/// certificate.
pub(crate) fn own_roots(path: &Path) -> Result<RootCertStore> {
    let invalid = |why: String| {
        Error::InvalidConfig(format!(
            "PostgreSQL `ssl_root_cert` {}: {why}",
            path.display()
        ))
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|error| invalid(error.to_string()))?;
    if certificates.is_empty() {
        return Err(invalid("no PEM certificate in it".to_owned()));
    }
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|error| invalid(error.to_string()))?;
    }
    Ok(roots)
}

/// The system's root certificates (as `rustls-native-certs` finds them: `SSL_CERT_FILE`,
/// `SSL_CERT_DIR`, else the system's store). When `required`, finding none fails with
/// [`Error::InvalidConfig`] saying why.
pub(crate) fn system_roots(required: bool) -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if required && roots.is_empty() {
        let why: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(Error::InvalidConfig(format!(
            "PostgreSQL sslmode=verify-full: no root certificate to check the server's against: \
             the system has none ({}); set `ssl_root_cert`, or SSL_CERT_FILE",
            if why.is_empty() {
                "its store is empty".to_owned()
            } else {
                why.join("; ")
            }
        )));
    }
    if !found.errors.is_empty() {
        tracing::debug!(errors = ?found.errors, "verrou: some system root certificates could not be read");
    }
    Ok(roots)
}

/// Accepts every certificate; checks the handshake's signatures.
#[derive(Debug)]
struct NoCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCheck {
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// rustls's verifier, with a certificate that does not name the host accepted. rustls
/// checks the name last, once the chain is known good, so that error means exactly "a good
/// chain for another name".
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
        let checked =
            self.0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        match checked {
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
