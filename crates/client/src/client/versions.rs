//! Versioned reads and writes: values with the log index of their last write, batch gets
//! across shards (one request per shard, in parallel), and compare-and-swap on the version.

use super::*;
use ringkv_types::{ShardId, ring};
use tokio::task::JoinSet;

/// A value and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Bytes,
    /// The log index of the key's last write in its shard (etcd's `mod_revision`): it grows
    /// with every write of the key. 0 for a value written before versions existed.
    pub version: u64,
}

/// The outcome of [`Client::compare_version_and_swap`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionCasOutcome {
    /// Whether the swap happened.
    pub succeeded: bool,
    /// The value before the operation (`None` when absent).
    pub previous: Option<Bytes>,
    /// Its version (0 when absent): on failure, what the next attempt should expect.
    pub previous_version: u64,
    /// The log index of the operation: the key's new version when it stored a value.
    pub index: u64,
}

/// Keys per `GetMany` request: a shard's keys beyond this go in several requests.
const GET_MANY_CHUNK: usize = 256;

impl Client {
    /// Sets `key` to `value` and returns its new version (the write's log index).
    ///
    /// # Errors
    /// As [`Client::put`].
    pub async fn put_versioned(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<u64> {
        let key = self.wire_key(key.into())?;
        let op = KvOp::Put {
            key: key.clone(),
            value: value.into(),
        };
        match self.write(&key, op, "put").await? {
            KvResult::Written { index } => Ok(index.0),
            _ => Err(Error::UnexpectedResponse { request: "put" }),
        }
    }

    /// Reads `key` and its version with the given consistency. `Ok(None)` when absent.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn get_versioned(
        &self,
        key: impl Into<Bytes>,
        consistency: ReadConsistency,
    ) -> Result<Option<Versioned>> {
        let mut values = self.get_many(vec![key.into()], consistency).await?;
        Ok(values.pop().flatten())
    }

    /// Reads many keys, from any number of shards, with their versions: one request per shard
    /// (several for more than 256 keys), all in flight at once, each read with `consistency`.
    /// The answer is in the order of `keys`. Each shard's keys are read at one point of that
    /// shard's history; different shards are read independently (not one snapshot).
    ///
    /// # Errors
    /// See [`Error`]; the first failing shard's error (the others' reads are dropped).
    pub async fn get_many(
        &self,
        keys: Vec<Bytes>,
        consistency: ReadConsistency,
    ) -> Result<Vec<Option<Versioned>>> {
        let wire: Vec<Bytes> = keys
            .into_iter()
            .map(|key| self.wire_key(key))
            .collect::<Result<_>>()?;
        let mut answers: Vec<Option<Versioned>> = vec![None; wire.len()];
        let mut pending: Vec<usize> = (0..wire.len()).collect();
        // A group refused because the map moved (a split) is regrouped with the new map;
        // each round reloads, so a few rounds suffice.
        for _ in 0..self.inner.config.retry.attempts_max.max(1) {
            if pending.is_empty() {
                break;
            }
            let mut tasks = JoinSet::new();
            for group in self.group_by_shard(&wire, &pending) {
                let client = self.clone();
                let keys: Vec<Bytes> = group.iter().map(|at| wire[*at].clone()).collect();
                tasks.spawn(async move {
                    let position = keys.first().map_or(0, |key| ring::position(key));
                    let op = KvOp::GetMany { keys, consistency };
                    (group, client.execute(position, op, None).await)
                });
            }
            let mut regroup = Vec::new();
            while let Some(joined) = tasks.join_next().await {
                let (group, result) = joined.map_err(|error| Error::Config {
                    reason: format!("a batch-get task failed: {error}"),
                })?;
                match result {
                    Ok(KvResult::Values { values, .. }) if values.len() == group.len() => {
                        for (at, found) in group.into_iter().zip(values) {
                            let version = found.version.0;
                            answers[at] = found.value.map(|value| Versioned { value, version });
                        }
                    }
                    Ok(_) => {
                        return Err(Error::UnexpectedResponse {
                            request: "get_many",
                        });
                    }
                    Err(Error::CrossShardBatch { .. }) => regroup.extend(group),
                    Err(error) => return Err(error),
                }
            }
            regroup.sort_unstable();
            pending = regroup;
        }
        if pending.is_empty() {
            Ok(answers)
        } else {
            Err(Error::NoShardMap {
                reason: "the shard map kept changing under a batch get".into(),
            })
        }
    }

    /// Sets `key` to `new` (deletes it when `new` is `None`) only if its version is
    /// `expected_version` (0 = the key must be absent), like etcd's `mod_revision` compare.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn compare_version_and_swap(
        &self,
        key: impl Into<Bytes>,
        expected_version: u64,
        new: Option<Bytes>,
    ) -> Result<VersionCasOutcome> {
        let key = self.wire_key(key.into())?;
        let op = KvOp::CompareVersionAndSwap {
            key: key.clone(),
            expected_version,
            new,
        };
        match self.write(&key, op, "compare_version_and_swap").await? {
            KvResult::VersionSwapped {
                succeeded,
                previous,
                previous_version,
                index,
            } => Ok(VersionCasOutcome {
                succeeded,
                previous,
                previous_version: previous_version.0,
                index: index.0,
            }),
            _ => Err(Error::UnexpectedResponse {
                request: "compare_version_and_swap",
            }),
        }
    }

    /// The positions `pending` of `keys`, grouped by the shard the cached map routes them to
    /// (keys the map does not cover form their own group), each group cut into chunks.
    fn group_by_shard(&self, keys: &[Bytes], pending: &[usize]) -> Vec<Vec<usize>> {
        let routing = self.read_routing();
        let mut groups: HashMap<Option<ShardId>, Vec<usize>> = HashMap::new();
        for &at in pending {
            let shard = routing.descriptor_for_key(&keys[at]).map(|d| d.id);
            groups.entry(shard).or_default().push(at);
        }
        let mut out: Vec<Vec<usize>> = groups
            .into_values()
            .flat_map(|group| {
                group
                    .chunks(GET_MANY_CHUNK)
                    .map(<[usize]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_unstable();
        out
    }
}
