//! The HTTPS server's TLS configuration: the node's own certificate, the ring provider (as the
//! transport), a client certificate requested but not required.

use crate::error::{Error, Result};
use ringkv_transport::certs::TlsIdentity;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;

fn tls_error(error: impl std::fmt::Display) -> Error {
    Error::Fatal {
        reason: format!("HTTPS configuration: {error}"),
    }
}

/// The rustls server configuration of the HTTPS port.
///
/// A client certificate that chains to the cluster CA is verified when offered (a later
/// authentication step can name the principal from it); curl without one is served too.
/// TLS 1.3 and 1.2 (common HTTP clients still negotiate 1.2), ALPN `h2` then `http/1.1`.
///
/// # Errors
/// [`Error::Fatal`] when the certificate or key does not fit.
pub fn server_config(identity: &TlsIdentity) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in identity.trust_roots() {
        roots.add(ca.clone()).map_err(tls_error)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(tls_error)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}
