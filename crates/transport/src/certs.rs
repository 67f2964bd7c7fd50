//! Certificates for mutual TLS: a cluster CA, node certificates and client certificates.
//!
//! - The CA is self-signed, `CN = ringkv <cluster> CA`.
//! - A node certificate names `node-<id>.<cluster>` (DNS SAN) plus the node's IP addresses, with
//!   extended key usage server *and* client auth: a node uses it both to accept and to dial.
//!   Peers check that name against the node id a peer announces.
//! - A client certificate names `client-<name>.<cluster>` with client auth only, so it can call
//!   the client service but never pass as a node.
//!
//! Every certificate gets an explicit validity (rcgen's default is 1975–4096). Private keys are
//! written owner-only (mode 0600). This module is what `ringctl certs` calls.

use crate::config::node_server_name;
use crate::error::{Error, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use ringkv_types::NodeId;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// When a certificate is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl Validity {
    /// From one hour ago (tolerates clock skew between machines) to `days` days from now.
    pub fn days_from_now(days: u32) -> Self {
        let now = SystemTime::now();
        Self {
            not_before: now.checked_sub(Duration::from_secs(3600)).unwrap_or(now),
            not_after: now + Duration::from_secs(u64::from(days) * 86_400),
        }
    }

    fn apply(&self, params: &mut CertificateParams) -> Result<()> {
        if self.not_after <= self.not_before {
            return Err(Error::Config {
                reason: "certificate not_after must follow not_before".into(),
            });
        }
        params.not_before = time::OffsetDateTime::from(self.not_before);
        params.not_after = time::OffsetDateTime::from(self.not_after);
        Ok(())
    }
}

/// A certificate and its private key, PEM-encoded. `Debug` does not print the key.
#[derive(Clone)]
pub struct PemPair {
    /// The certificate.
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

impl fmt::Debug for PemPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemPair")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl PemPair {
    /// Writes `<dir>/<stem>.pem` (certificate, mode 0644) and `<dir>/<stem>.key` (key, mode
    /// 0600), replacing existing files. Returns both paths.
    ///
    /// # Errors
    /// [`Error::File`] on any I/O failure.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
        let cert_path = dir.join(format!("{stem}.pem"));
        let key_path = dir.join(format!("{stem}.key"));
        write_file(&cert_path, self.cert_pem.as_bytes(), 0o644)?;
        write_file(&key_path, self.key_pem.as_bytes(), 0o600)?;
        Ok((cert_path, key_path))
    }
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let file_error = |action, source| Error::File {
        action,
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // IMPORTANT: create with the final mode so a key is never readable by others, not even
        // for a moment.
        options.mode(mode);
    }
    let mut file = options.open(path).map_err(|e| file_error("create", e))?;
    #[cfg(unix)]
    {
        // The mode above only applies to new files; an existing file keeps its permissions.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| file_error("set permissions of", e))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    file.write_all(contents)
        .map_err(|e| file_error("write", e))?;
    file.sync_all().map_err(|e| file_error("sync", e))
}

/// A cluster's certificate authority: signs node and client certificates.
pub struct ClusterCa {
    cluster: String,
    params: CertificateParams,
    key: KeyPair,
    cert_pem: String,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

fn ca_params(cluster: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("ringkv {cluster} CA"));
    name.push(DnType::OrganizationName, "ringkv");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl ClusterCa {
    /// A new CA for `cluster` with a fresh ECDSA P-256 key.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty validity, [`Error::Certificate`] if signing fails.
    pub fn generate(cluster: &str, validity: Validity) -> Result<Self> {
        let mut params = ca_params(cluster);
        validity.apply(&mut params)?;
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self {
            cluster: cluster.to_string(),
            params,
            key,
            cert_pem,
        })
    }

    /// Loads a CA written by [`ClusterCa::to_pem_pair`] so it can sign more certificates.
    /// The issuer name is rebuilt from `cluster`, so it must be the cluster the CA was made for.
    ///
    /// # Errors
    /// [`Error::File`] or [`Error::Pem`] when the files cannot be read or parsed.
    pub fn load(cluster: &str, cert_path: &Path, key_path: &Path) -> Result<Self> {
        let cert_pem = read_string(cert_path)?;
        let key_pem = read_string(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| Error::Pem {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            cluster: cluster.to_string(),
            params: ca_params(cluster),
            key,
            cert_pem,
        })
    }

    /// The cluster this CA signs for.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The CA certificate, PEM (distributed to every node and client).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate and key, for writing to disk.
    pub fn to_pem_pair(&self) -> PemPair {
        PemPair {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key.serialize_pem(),
        }
    }

    /// A certificate for node `node`: DNS SAN `node-<id>.<cluster>` plus `ips`, usable as TLS
    /// server and client.
    ///
    /// # Errors
    /// [`Error::Config`] for node 0 or an empty validity, [`Error::Certificate`] on failure.
    pub fn issue_node(&self, node: NodeId, ips: &[IpAddr], validity: Validity) -> Result<PemPair> {
        let names: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
        self.issue_node_named(node, &names, validity)
    }

    /// A certificate for node `node`: DNS SAN `node-<id>.<cluster>` plus `names`, each an IP
    /// (an IP SAN) or a DNS name (a DNS SAN, e.g. the container or pod name a joining node
    /// dials through `join`), usable as TLS server and client.
    ///
    /// # Errors
    /// [`Error::Config`] for node 0 or an empty validity, [`Error::Certificate`] for an invalid
    /// name.
    pub fn issue_node_named(
        &self,
        node: NodeId,
        names: &[String],
        validity: Validity,
    ) -> Result<PemPair> {
        if !node.is_some() {
            return Err(Error::Config {
                reason: "node id 0 cannot have a certificate".into(),
            });
        }
        let name = node_server_name(node, &self.cluster);
        let mut sans = vec![name.clone()];
        sans.extend(names.iter().filter(|n| **n != name).cloned());
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params, validity)
    }

    /// A client certificate `client-<name>.<cluster>`, usable only as TLS client.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty validity, [`Error::Certificate`] for an invalid name.
    pub fn issue_client(&self, name: &str, validity: Validity) -> Result<PemPair> {
        let dns_name = format!("client-{name}.{}", self.cluster);
        let mut params = CertificateParams::new(vec![dns_name.clone()])?;
        params.distinguished_name.push(DnType::CommonName, dns_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        self.sign(params, validity)
    }

    fn sign(&self, mut params: CertificateParams, validity: Validity) -> Result<PemPair> {
        validity.apply(&mut params)?;
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn read_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::File {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

/// What a node or client presents and trusts: the cluster CA, its own chain and key.
pub struct TlsIdentity {
    /// The cluster CA certificate: the first of the CA file (a trust root).
    pub ca: CertificateDer<'static>,
    /// The CA file's further certificates, trusted as much as `ca`: a CA bundle holds the old
    /// and the new CA while a CA is rolled (docs/security.md).
    pub other_cas: Vec<CertificateDer<'static>>,
    /// This party's certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// This party's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            other_cas: self.other_cas.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Loads the CA certificate, this party's certificate chain and its key from PEM files.
    ///
    /// # Errors
    /// [`Error::File`] or [`Error::Pem`] naming the offending file.
    pub fn load(ca_path: &Path, cert_path: &Path, key_path: &Path) -> Result<Self> {
        let (ca, other_cas) = ca_bundle(ca_path)?;
        let cert_bytes = std::fs::read(cert_path).map_err(|source| Error::File {
            action: "read",
            path: cert_path.to_path_buf(),
            source,
        })?;
        let chain = certs(&cert_bytes, cert_path)?;
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| Error::Pem {
            path: key_path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            ca,
            other_cas,
            chain,
            key,
        })
    }

    /// Every trusted CA certificate: `ca`, then `other_cas`.
    pub fn trust_roots(&self) -> impl Iterator<Item = &CertificateDer<'static>> {
        std::iter::once(&self.ca).chain(&self.other_cas)
    }

    /// An identity that trusts the cluster CA at `ca_path` and presents no certificate: a
    /// client that authenticates with a token instead (the node treats its connection as
    /// anonymous and needs a token on every request).
    ///
    /// # Errors
    /// [`Error::File`] or [`Error::Pem`] naming the CA file.
    pub fn ca_only(ca_path: &Path) -> Result<Self> {
        let (ca, other_cas) = ca_bundle(ca_path)?;
        let mut identity = Self::ca_only_der(ca);
        identity.other_cas = other_cas;
        Ok(identity)
    }

    /// [`TlsIdentity::ca_only`] from a CA certificate in memory.
    pub fn ca_only_der(ca: CertificateDer<'static>) -> Self {
        Self {
            ca,
            other_cas: Vec::new(),
            chain: Vec::new(),
            key: PrivateKeyDer::from(rustls_pki_types::PrivatePkcs8KeyDer::from(Vec::new())),
        }
    }

    /// Who this identity's certificate says it is in `cluster` (see
    /// [`ringkv_types::PeerIdentity::from_dns_names`]); `Anonymous` without a certificate.
    pub fn peer_identity(&self, cluster: &str) -> ringkv_types::PeerIdentity {
        match self.chain.first() {
            Some(leaf) => crate::tls::certificate_identity(leaf, cluster),
            None => ringkv_types::PeerIdentity::Anonymous,
        }
    }

    /// Whether this identity presents a certificate.
    pub fn has_certificate(&self) -> bool {
        !self.chain.is_empty()
    }

    /// Builds an identity from PEM text already in memory.
    ///
    /// # Errors
    /// [`Error::Pem`] when a PEM block is missing or malformed.
    pub fn from_pem(ca_pem: &str, pair: &PemPair) -> Result<Self> {
        let in_memory = Path::new("<memory>");
        let mut cas = certs(ca_pem.as_bytes(), in_memory)?.into_iter();
        let ca = cas.next().ok_or_else(|| Error::Pem {
            path: in_memory.to_path_buf(),
            reason: "no certificate found".into(),
        })?;
        let chain = certs(pair.cert_pem.as_bytes(), in_memory)?;
        let key =
            PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).map_err(|e| Error::Pem {
                path: in_memory.to_path_buf(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            ca,
            other_cas: cas.collect(),
            chain,
            key,
        })
    }
}

fn certs(bytes: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_slice_iter(bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(Error::Pem {
            path: path.to_path_buf(),
            reason: "no certificate found".into(),
        });
    }
    Ok(chain)
}

/// The CA file at `path`: one CA certificate or a bundle of several (its first, the rest).
fn ca_bundle(path: &Path) -> Result<(CertificateDer<'static>, Vec<CertificateDer<'static>>)> {
    let bytes = std::fs::read(path).map_err(|source| Error::File {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let mut cas = certs(&bytes, path)?.into_iter();
    let first = cas.next().ok_or_else(|| Error::Pem {
        path: path.to_path_buf(),
        reason: "no certificate found".into(),
    })?;
    Ok((first, cas.collect()))
}

/// Who a certificate `leaf` (already verified against the cluster CA, e.g. by an HTTPS
/// handshake) says it is in `cluster`; see [`ringkv_types::PeerIdentity::from_dns_names`].
pub fn certificate_identity(
    leaf: &CertificateDer<'_>,
    cluster: &str,
) -> ringkv_types::PeerIdentity {
    crate::tls::certificate_identity(leaf, cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_load_and_keys_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let validity = Validity::days_from_now(1);
        let ca = ClusterCa::generate("test", validity).unwrap();
        let (ca_cert, ca_key) = ca.to_pem_pair().write(dir.path(), "ca").unwrap();
        let node = ca
            .issue_node(NodeId(3), &["127.0.0.1".parse().unwrap()], validity)
            .unwrap();
        let (cert, key) = node.write(dir.path(), "node-3").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for path in [&ca_key, &key] {
                let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", path.display());
            }
        }
        let identity = TlsIdentity::load(&ca_cert, &cert, &key).unwrap();
        assert_eq!(identity.chain.len(), 1);
        // A reloaded CA still signs certificates that chain to the original CA certificate.
        let reloaded = ClusterCa::load("test", &ca_cert, &ca_key).unwrap();
        let client = reloaded.issue_client("ops", validity).unwrap();
        assert!(TlsIdentity::from_pem(reloaded.cert_pem(), &client).is_ok());
        assert!(!format!("{node:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn empty_validity_and_node_zero_are_refused() {
        let validity = Validity::days_from_now(1);
        let backwards = Validity {
            not_before: validity.not_after,
            not_after: validity.not_before,
        };
        assert!(matches!(
            ClusterCa::generate("test", backwards),
            Err(Error::Config { .. })
        ));
        let ca = ClusterCa::generate("test", validity).unwrap();
        assert!(matches!(
            ca.issue_node(NodeId::NONE, &[], validity),
            Err(Error::Config { .. })
        ));
    }
}
