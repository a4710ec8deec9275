//! TLS configuration: loading and checking the server's certificate and key and the client CA,
//! and the client-certificate verifier that admits only registered partners.
//!
//! The verifier first runs rustls' `WebPkiClientVerifier` (chain to the client CA, validity
//! period, key usage, signature), then refuses a certificate whose SHA-256 fingerprint is not
//! registered for a partner. Refusals surface as rustls errors on the server side, where the
//! connection code audits them ([`refusal`] turns them into an audit reason and details).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    ServerConfig, SignatureScheme,
};

use super::{Error, Options, PartnerDirectory};

/// SHA-256 (lowercase hex) of a certificate's DER: the partner identity.
pub fn cert_fingerprint(der: &[u8]) -> String {
    crate::digest::sha256_hex(der)
}

/// The ring provider (ring only: no aws-lc, no C build).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Unreadable {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Read every PEM certificate in a file.
///
/// # Errors
/// `serve-file-unreadable`; `serve-cert-invalid` (as `BadCert`) when there is none or one does
/// not parse.
pub fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let bytes = read(what, path)?;
    let bad = |why: String| Error::BadCert {
        path: path.to_path_buf(),
        why,
    };
    let certs: Vec<_> = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no -----BEGIN CERTIFICATE----- block found".into()));
    }
    for (i, c) in certs.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(c.as_ref()) {
            return Err(bad(format!("certificate #{} does not parse: {e}", i + 1)));
        }
    }
    Ok(certs)
}

/// Read the (first) PEM private key in a file.
///
/// # Errors
/// `serve-file-unreadable`, `serve-key-invalid`.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let bytes = read("server key", path)?;
    let bad = |why: String| Error::BadKey {
        path: path.to_path_buf(),
        why,
    };
    match rustls_pemfile::private_key(&mut bytes.as_slice()) {
        Ok(Some(k)) => Ok(k),
        Ok(None) => Err(bad(
            "no -----BEGIN PRIVATE KEY----- (or RSA / EC PRIVATE KEY) block found".into(),
        )),
        Err(e) => Err(bad(format!("malformed PEM: {e}"))),
    }
}

/// A loaded server configuration and the fingerprints worth recording.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) server_cert_sha256: String,
    pub(crate) client_ca_sha256: Vec<String>,
}

/// Build the rustls server configuration from the options.
pub(crate) fn server_config(
    options: &Options,
    partners: Arc<PartnerDirectory>,
) -> Result<Loaded, Error> {
    let chain = load_certs("server certificate", &options.cert)?;
    let key = load_key(&options.key)?;
    let cas = load_certs("client CA", &options.client_ca).map_err(|e| match e {
        Error::BadCert { path, why } => Error::BadClientCa { path, why },
        other => other,
    })?;
    let mut roots = RootCertStore::empty();
    for (i, ca) in cas.iter().enumerate() {
        roots.add(ca.clone()).map_err(|e| Error::BadClientCa {
            path: options.client_ca.clone(),
            why: format!("certificate #{} is not a usable trust anchor: {e}", i + 1),
        })?;
    }
    let provider = provider();
    let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::BadClientCa {
            path: options.client_ca.clone(),
            why: e.to_string(),
        })?;
    let verifier = Arc::new(PartnerVerifier {
        inner: webpki,
        partners,
    });
    let versions: &[&rustls::SupportedProtocolVersion] = if options.allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let server_cert_sha256 = cert_fingerprint(chain[0].as_ref());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| Error::Startup {
            why: format!("TLS versions: {e}"),
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => Error::KeyMismatch {
                cert: options.cert.clone(),
                key: options.key.clone(),
                why: e.to_string(),
            },
            other => Error::BadKey {
                path: options.key.clone(),
                why: other.to_string(),
            },
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No session resumption: every connection runs the full client-certificate check
    // (chain, validity, partner table), so an expired or removed partner cannot resume.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Loaded {
        config: Arc::new(config),
        server_cert_sha256,
        client_ca_sha256: cas.iter().map(|c| cert_fingerprint(c.as_ref())).collect(),
    })
}

/// A chained certificate that is not registered for any partner (carried inside the rustls
/// error so the connection code can audit the fingerprint).
#[derive(Debug, thiserror::Error)]
#[error("client certificate {sha256} is not registered for any partner")]
pub struct UnknownPartner {
    /// SHA-256 of the certificate (hex).
    pub sha256: String,
}

/// The partner table could not be read: refuse (fail closed).
#[derive(Debug, thiserror::Error)]
#[error("the partner table cannot be read: {0}")]
pub struct DirectoryUnavailable(pub String);

/// WebPKI chain verification, then the partner table.
#[derive(Debug)]
struct PartnerVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    partners: Arc<PartnerDirectory>,
}

impl ClientCertVerifier for PartnerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let sha256 = cert_fingerprint(end_entity.as_ref());
        let other = |e: Arc<dyn std::error::Error + Send + Sync>| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(e)))
        };
        match self.partners.lookup(&sha256) {
            Ok(Some(_)) => Ok(ClientCertVerified::assertion()),
            Ok(None) => Err(other(Arc::new(UnknownPartner { sha256 }))),
            Err(e) => Err(other(Arc::new(DirectoryUnavailable(e.to_string())))),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// How a failed handshake is audited: the reason code, the certificate fingerprint when known,
/// and rustls' description. `None` when the error did not come from rustls (a client that
/// just went away), which is not worth a record.
pub(crate) fn refusal(err: &std::io::Error) -> Option<(&'static str, Option<String>, String)> {
    let tls = err.get_ref()?.downcast_ref::<rustls::Error>()?;
    if let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) = tls {
        if let Some(u) = inner.downcast_ref::<UnknownPartner>() {
            return Some((
                "serve-partner-unknown",
                Some(u.sha256.clone()),
                tls.to_string(),
            ));
        }
    }
    Some(("serve-handshake-refused", None, tls.to_string()))
}
