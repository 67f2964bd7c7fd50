//! TLS and QUIC configurations: TLS 1.3 only, ring provider, mutual TLS over the cluster CA,
//! ALPN `ringkv/2`, keep-alive and idle timeout.

use crate::certs::TlsIdentity;
use crate::config::{ALPN, TransportConfig, node_server_name};
use crate::error::{Error, Result};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use ringkv_types::{NodeId, PeerIdentity};
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
    for ca in identity.trust_roots() {
        roots.add(ca.clone()).map_err(tls_error)?;
    }
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

/// The endpoint configuration, with the stateless reset key and the connection-id key derived
/// from the node's private key.
///
/// Why: after a node is killed and restarted on the same address, its peers still hold QUIC
/// connections to the dead process. Their packets reach the new process, which can answer
/// each with a stateless reset (RFC 9000 §10.3), but only if it recognises the connection id
/// as one of its own (quinn checks a keyed hash in it) and a peer only accepts a reset whose
/// token matches the one the *old* process announced, `HMAC(reset key, connection id)`. With
/// quinn's default random keys per process neither holds: the new process drops the packets
/// and the peer waits for the idle timeout (30 s) before it redials, so a restarted node hears
/// nothing from the nodes that dial it (smaller ids) for that long. Keys that survive restarts
/// make the reset work at once. They are as secret as the private key they come from: whoever
/// knows the reset key can reset this node's connections.
pub(crate) fn endpoint_config(identity: &TlsIdentity) -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key(identity)));
    let cid_key = connection_id_key(identity);
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

/// `HMAC-SHA256(private key, label)`: stable across restarts, distinct per node and per label,
/// revealing nothing about the private key.
fn derive(identity: &TlsIdentity, label: &[u8]) -> ring::hmac::Tag {
    let master = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, identity.key.secret_der());
    ring::hmac::sign(&master, label)
}

fn reset_key(identity: &TlsIdentity) -> ring::hmac::Key {
    let derived = derive(identity, b"ringkv/1 quic stateless reset key");
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref())
}

fn connection_id_key(identity: &TlsIdentity) -> u64 {
    let derived = derive(identity, b"ringkv/1 quic connection id key");
    let mut word = [0u8; 8];
    for (slot, byte) in word.iter_mut().zip(derived.as_ref()) {
        *slot = *byte;
    }
    u64::from_le_bytes(word)
}

/// The server side: accept any client whose certificate chains to the cluster CA, and clients
/// without a certificate (they are [`PeerIdentity::Anonymous`]: the node requires a token on
/// every request of theirs, and peer streams need a node certificate, see `receive.rs`).
pub(crate) fn server_config(
    identity: &TlsIdentity,
    config: &TransportConfig,
) -> Result<quinn::ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(identity)?, provider())
        .allow_unauthenticated()
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

/// The client side: present our certificate (if the identity has one), trust only the
/// cluster CA.
pub(crate) fn client_config(
    identity: &TlsIdentity,
    keep_alive: Duration,
    idle_timeout: Duration,
    bidi_streams: u32,
) -> Result<quinn::ClientConfig> {
    let tls = client_tls(identity)?;
    quic_client_config(tls, keep_alive, idle_timeout, bidi_streams)
}

/// As [`client_config`], but the server may be any node of `cluster` (see
/// [`crate::any_node`]): for dialing a seed address whose node id is not known yet.
pub(crate) fn any_node_client_config(
    identity: &TlsIdentity,
    cluster: &str,
    keep_alive: Duration,
    idle_timeout: Duration,
    bidi_streams: u32,
) -> Result<quinn::ClientConfig> {
    let mut tls = client_tls(identity)?;
    let webpki =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(identity)?, provider())
            .build()
            .map_err(tls_error)?;
    tls.dangerous()
        .set_certificate_verifier(Arc::new(crate::any_node::AnyNodeVerifier::new(
            webpki, cluster,
        )));
    quic_client_config(tls, keep_alive, idle_timeout, bidi_streams)
}

/// The rustls side of every client configuration: TLS 1.3, ring, the cluster CA, our
/// certificate, ALPN.
fn client_tls(identity: &TlsIdentity) -> Result<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_root_certificates(roots(identity)?);
    let mut tls = if identity.has_certificate() {
        builder
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(tls_error)?
    } else {
        builder.with_no_client_auth()
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    Ok(tls)
}

fn quic_client_config(
    tls: rustls::ClientConfig,
    keep_alive: Duration,
    idle_timeout: Duration,
    bidi_streams: u32,
) -> Result<quinn::ClientConfig> {
    let crypto = QuicClientConfig::try_from(tls).map_err(tls_error)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport_params(keep_alive, idle_timeout, bidi_streams)?);
    Ok(client)
}

/// Who the peer of `connection` is, from the DNS names of the certificate it presented (whose
/// chain to the CA the handshake verified): see [`PeerIdentity::from_dns_names`].
pub(crate) fn peer_identity(connection: &quinn::Connection, cluster: &str) -> PeerIdentity {
    let Some(identity) = connection.peer_identity() else {
        return PeerIdentity::Anonymous;
    };
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else {
        return PeerIdentity::Anonymous;
    };
    match chain.first() {
        Some(leaf) => certificate_identity(leaf, cluster),
        None => PeerIdentity::Anonymous,
    }
}

/// The identity the DNS names of certificate `leaf` claim (its chain is not checked here).
pub(crate) fn certificate_identity(leaf: &CertificateDer<'_>, cluster: &str) -> PeerIdentity {
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return PeerIdentity::Anonymous;
    };
    PeerIdentity::from_dns_names(cert.valid_dns_names(), cluster)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{ClusterCa, Validity};

    fn node_identity(ca: &ClusterCa, node: u64) -> crate::certs::PemPair {
        ca.issue_node(NodeId(node), &[], Validity::days_from_now(1))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Loads the identity from PEM, as a (re)started process does.
    fn load(ca: &ClusterCa, pair: &crate::certs::PemPair) -> TlsIdentity {
        TlsIdentity::from_pem(ca.cert_pem(), pair).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The stateless reset token of one connection id.
    fn token(identity: &TlsIdentity) -> Vec<u8> {
        ring::hmac::sign(&reset_key(identity), b"connection id")
            .as_ref()
            .to_vec()
    }

    #[test]
    fn the_reset_key_survives_restarts_and_differs_between_nodes() {
        let ca =
            ClusterCa::generate("c", Validity::days_from_now(1)).unwrap_or_else(|e| panic!("{e}"));
        let one = node_identity(&ca, 1);
        let two = node_identity(&ca, 2);
        assert_eq!(token(&load(&ca, &one)), token(&load(&ca, &one)));
        assert_ne!(token(&load(&ca, &one)), token(&load(&ca, &two)));
        let cid_key = |pair| connection_id_key(&load(&ca, pair));
        assert_eq!(cid_key(&one), cid_key(&one));
        assert_ne!(cid_key(&one), cid_key(&two));
    }
}
