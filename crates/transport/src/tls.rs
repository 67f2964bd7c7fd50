//! TLS and QUIC configurations: TLS 1.3 only, ring provider, mutual TLS over the cluster CA,
//! ALPN `ringkv/2`, keep-alive and idle timeout.

use crate::certs::TlsIdentity;
use crate::config::{ALPN, TransportConfig, node_server_name};
use crate::error::{Error, Result};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use ringkv_types::NodeId;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, DnsName, ServerName};
use std::sync::Arc;
use std::time::Duration;

fn tls_error(error: impl std::fmt::Display) -> Error {
    Error::Tls {
        reason: error.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(identity: &TlsIdentity) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    roots.add(identity.ca.clone()).map_err(tls_error)?;
    Ok(Arc::new(roots))
}

/// QUIC transport parameters shared by both sides.
pub(crate) fn transport_params(
    keep_alive: Duration,
    idle_timeout: Duration,
    bidi_streams: u32,
) -> Result<Arc<quinn::TransportConfig>> {
    let mut params = quinn::TransportConfig::default();
    params.keep_alive_interval(Some(keep_alive));
    params.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(idle_timeout).map_err(tls_error)?,
    ));
    params.max_concurrent_bidi_streams(bidi_streams.into());
    // Control, bulk and a few concurrent snapshot streams per direction.
    params.max_concurrent_uni_streams(16u32.into());
    // Larger windows let one long-lived stream fill a LAN link (bytes in flight = window).
    params.stream_receive_window((8u32 * 1024 * 1024).into());
    params.receive_window((32u32 * 1024 * 1024).into());
    params.send_window(32 * 1024 * 1024);
    Ok(Arc::new(params))
}

/// The server side: accept any client whose certificate chains to the cluster CA.
pub(crate) fn server_config(
    identity: &TlsIdentity,
    config: &TransportConfig,
) -> Result<quinn::ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(identity)?, provider())
        .build()
        .map_err(tls_error)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(tls_error)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport_params(
        config.keep_alive,
        config.idle_timeout,
        config.max_concurrent_bidi_streams,
    )?);
    Ok(server)
}

/// The client side: present our certificate, trust only the cluster CA.
pub(crate) fn client_config(
    identity: &TlsIdentity,
    keep_alive: Duration,
    idle_timeout: Duration,
    bidi_streams: u32,
) -> Result<quinn::ClientConfig> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_root_certificates(roots(identity)?)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(tls_error)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport_params(keep_alive, idle_timeout, bidi_streams)?);
    Ok(client)
}

/// Whether the peer of `connection` presented a certificate naming `node-<node>.<cluster>`.
/// (The chain to the CA was already verified by the handshake.)
pub(crate) fn peer_is_node(connection: &quinn::Connection, node: NodeId, cluster: &str) -> bool {
    let Some(identity) = connection.peer_identity() else {
        return false;
    };
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else {
        return false;
    };
    let Some(leaf) = chain.first() else {
        return false;
    };
    let Ok(name) = DnsName::try_from(node_server_name(node, cluster)) else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&ServerName::DnsName(name))
        .is_ok()
}
