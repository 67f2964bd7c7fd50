//! Dialing a node whose id is not known yet (a `host:port` seed endpoint).
//!
//! A client normally dials node N and requires its certificate to name `node-N.<cluster>`. A
//! user who writes `--endpoints 10.0.0.5:7100` does not know N. [`AnyNodeVerifier`] accepts a
//! server certificate that chains to the cluster CA and names exactly one `node-<id>.<cluster>`,
//! checked by rustls' own WebPKI verifier against that very name (so validity, key usage and the
//! name match are checked as for a known node), and the id is then read back from the verified
//! certificate. Trust is unchanged: only a holder of a cluster node certificate passes, and the
//! id comes from the CA-signed certificate, never from the network address or a request.

use crate::config::node_server_name;
use ringkv_types::NodeId;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// Verifies a server certificate as the certificate of whichever node it names.
#[derive(Debug)]
pub(crate) struct AnyNodeVerifier {
    inner: Arc<WebPkiServerVerifier>,
    cluster: String,
}

impl AnyNodeVerifier {
    pub(crate) fn new(inner: Arc<WebPkiServerVerifier>, cluster: &str) -> Self {
        Self {
            inner,
            cluster: cluster.to_string(),
        }
    }
}

impl ServerCertVerifier for AnyNodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let not_a_node = || rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        let node = node_named_by(end_entity, &self.cluster).ok_or_else(not_a_node)?;
        let name = ServerName::try_from(node_server_name(node, &self.cluster))
            .map_err(|_| not_a_node())?;
        self.inner
            .verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
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

/// The node a certificate names as `node-<id>.<cluster>` (DNS SAN), if it names exactly one.
/// Only a hint for which name to verify: [`AnyNodeVerifier`] then verifies the certificate for
/// that name.
pub(crate) fn node_named_by(cert: &CertificateDer<'_>, cluster: &str) -> Option<NodeId> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let suffix = format!(".{cluster}");
    let mut found = None;
    for name in cert.valid_dns_names() {
        let Some(id) = name
            .strip_prefix("node-")
            .and_then(|rest| rest.strip_suffix(suffix.as_str()))
        else {
            continue;
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let id = id.parse::<u64>().ok().filter(|id| *id != 0)?;
        match found {
            None => found = Some(id),
            Some(other) if other == id => {}
            // Two node names: ambiguous, refuse.
            Some(_) => return None,
        }
    }
    found.map(NodeId)
}

/// The node the peer of `connection` proved to be (its verified certificate's node name).
pub(crate) fn peer_node(connection: &quinn::Connection, cluster: &str) -> Option<NodeId> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    node_named_by(chain.first()?, cluster)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{ClusterCa, Validity};

    fn der(pem: &str) -> CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn node_certificates_name_their_node_and_client_certificates_none() {
        let ca = ClusterCa::generate("prod", Validity::days_from_now(1))
            .unwrap_or_else(|e| panic!("{e}"));
        let node = ca
            .issue_node(NodeId(7), &[], Validity::days_from_now(1))
            .unwrap_or_else(|e| panic!("{e}"));
        let cert = der(&node.cert_pem);
        assert_eq!(node_named_by(&cert, "prod"), Some(NodeId(7)));
        assert_eq!(node_named_by(&cert, "other"), None);
        assert_eq!(node_named_by(&cert, "rod"), None);
        let client = ca
            .issue_client("alice", Validity::days_from_now(1))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(node_named_by(&der(&client.cert_pem), "prod"), None);
    }
}
