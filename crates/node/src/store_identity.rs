//! The store identity of a data dir: which cluster and node it belongs to, and a random store
//! incarnation drawn when the dir was first used. The placement driver records the incarnation
//! a node reports first (`Command::ReportStore`); a node that comes back with an empty or
//! foreign data dir carries another incarnation and is refused, so it cannot rejoin its Raft
//! groups as its old members having forgotten its votes and the entries it acknowledged.
//!
//! The file, [`STORE_IDENTITY_FILE`], is small text, written once: to a temporary file, fsynced,
//! renamed into place, and the directory fsynced.

use crate::error::{Error, Result};
use ringkv_types::NodeId;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Name of the store identity file in the data dir.
pub const STORE_IDENTITY_FILE: &str = "STORE_IDENTITY";

/// A data dir's store identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreIdentity {
    /// The cluster id (`node::cluster_id` of the cluster name).
    pub cluster_id: u64,
    /// The node the dir belongs to.
    pub node: NodeId,
    /// Random, drawn when the dir was first used; never zero.
    pub incarnation: u64,
}

impl StoreIdentity {
    /// A new identity with a random incarnation.
    ///
    /// # Errors
    /// [`Error::Io`] when the system's random source fails.
    pub fn generate(cluster_id: u64, node: NodeId) -> Result<Self> {
        use ring::rand::SecureRandom as _;
        let random = ring::rand::SystemRandom::new();
        loop {
            let mut bytes = [0u8; 8];
            random
                .fill(&mut bytes)
                .map_err(|_| Error::Io(std::io::Error::other("the random source failed")))?;
            let incarnation = u64::from_be_bytes(bytes);
            if incarnation != 0 {
                return Ok(Self {
                    cluster_id,
                    node,
                    incarnation,
                });
            }
        }
    }

    fn encode(&self) -> String {
        format!(
            "# ringkv store identity, written at this data dir's first start. Never copy it to \
             another data dir.\ncluster_id = {:016x}\nnode_id = {}\nincarnation = {:016x}\n",
            self.cluster_id,
            self.node.get(),
            self.incarnation
        )
    }

    fn decode(text: &str, path: &Path) -> Result<Self> {
        let corrupt = |reason: String| Error::Corrupt {
            what: "store identity file",
            reason: format!("{}: {reason}", path.display()),
        };
        let (mut cluster_id, mut node, mut incarnation) = (None, None, None);
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(corrupt(format!("line `{line}` is not `key = value`")));
            };
            let (key, value) = (key.trim(), value.trim());
            let hex = |value: &str| {
                u64::from_str_radix(value, 16)
                    .map_err(|error| corrupt(format!("`{key}` = `{value}`: {error}")))
            };
            match key {
                "cluster_id" => cluster_id = Some(hex(value)?),
                "incarnation" => incarnation = Some(hex(value)?),
                "node_id" => {
                    node = Some(NodeId(value.parse().map_err(|error| {
                        corrupt(format!("`node_id` = `{value}`: {error}"))
                    })?));
                }
                other => return Err(corrupt(format!("unknown key `{other}`"))),
            }
        }
        match (cluster_id, node, incarnation) {
            (Some(cluster_id), Some(node), Some(incarnation)) if incarnation != 0 => Ok(Self {
                cluster_id,
                node,
                incarnation,
            }),
            _ => Err(corrupt(
                "needs `cluster_id`, `node_id` and a non-zero `incarnation`".into(),
            )),
        }
    }
}

/// The identity file's path in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(STORE_IDENTITY_FILE)
}

/// Reads the identity of `data_dir`, `None` when it has none yet.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read, [`Error::Corrupt`] when it is not an identity.
pub fn load(data_dir: &Path) -> Result<Option<StoreIdentity>> {
    let path = path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => StoreIdentity::decode(&text, &path).map(Some),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(Error::Io(std::io::Error::new(
            error.kind(),
            format!("cannot read {}: {error}", path.display()),
        ))),
    }
}

/// Writes `identity` durably into `data_dir` (temporary file, fsync, rename, fsync of the dir),
/// replacing any previous one.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn save(data_dir: &Path, identity: &StoreIdentity) -> Result<()> {
    let path = path(data_dir);
    let temporary = data_dir.join(format!("{STORE_IDENTITY_FILE}.tmp"));
    let io = |what: &str, error: std::io::Error| {
        Error::Io(std::io::Error::new(
            error.kind(),
            format!("cannot {what} {}: {error}", path.display()),
        ))
    };
    let mut file = std::fs::File::create(&temporary).map_err(|e| io("create", e))?;
    file.write_all(identity.encode().as_bytes())
        .map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("fsync", e))?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(|e| io("rename into", e))?;
    std::fs::File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| io("fsync the directory of", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_survives_a_save_and_load_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let identity = StoreIdentity::generate(0xabc, NodeId(3)).unwrap();
        assert_ne!(identity.incarnation, 0);
        save(dir.path(), &identity).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(identity));
        assert!(!dir.path().join("STORE_IDENTITY.tmp").exists());
        let other = StoreIdentity::generate(0xabc, NodeId(3)).unwrap();
        assert_ne!(other.incarnation, identity.incarnation);

        std::fs::write(path(dir.path()), "cluster_id = 1\nnode_id = x\n").unwrap();
        let error = load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("STORE_IDENTITY"), "{error}");
        assert!(error.contains("node_id"), "{error}");
        std::fs::write(path(dir.path()), "cluster_id = 1\nnode_id = 2\n").unwrap();
        assert!(load(dir.path()).is_err());
    }
}
