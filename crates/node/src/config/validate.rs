//! Checks of the tables' values, each error naming its field.

use super::*;

impl NodeConfig {
    pub(super) fn validate_tables(&self) -> Result<()> {
        let raft = &self.raft;
        if raft.tick_ms == 0 || raft.tick_ms > 10_000 {
            return Err(invalid("raft.tick_ms", "must be in 1..=10000"));
        }
        // The core checks the remaining relations; map its message to our field names.
        self.raft_config(
            ringkv_types::ShardId(1),
            ringkv_types::member_id(self.node_id, 1),
        )
        .validate()
        .map_err(|error| invalid("raft", error.to_string()))?;
        if raft.max_pending_reads == 0 {
            return Err(invalid("raft.max_pending_reads", "must be at least 1"));
        }
        let limits = &self.limits;
        if limits.max_key_bytes == 0 || limits.max_key_bytes > ringkv_storage::KEY_BYTES_MAX as u64
        {
            return Err(invalid(
                "limits.max_key_bytes",
                format!("must be in 1..={}", ringkv_storage::KEY_BYTES_MAX),
            ));
        }
        if limits.max_value_bytes > ringkv_storage::VALUE_BYTES_MAX as u64 {
            return Err(invalid(
                "limits.max_value_bytes",
                format!("must be at most {}", ringkv_storage::VALUE_BYTES_MAX),
            ));
        }
        if limits.max_request_bytes < limits.max_key_bytes + limits.max_value_bytes {
            return Err(invalid(
                "limits.max_request_bytes",
                "must be at least max_key_bytes + max_value_bytes",
            ));
        }
        if limits.max_request_bytes > raft.max_uncommitted_bytes {
            return Err(invalid(
                "limits.max_request_bytes",
                "must not exceed raft.max_uncommitted_bytes (a request must fit in one proposal)",
            ));
        }
        // The transport frames requests in 16 MiB; leave room for the envelope and encoding.
        if limits.max_request_bytes > 15 << 20 {
            return Err(invalid(
                "limits.max_request_bytes",
                "must be at most 15 MiB (the transport's frame limit is 16 MiB)",
            ));
        }
        if limits.max_batch_ops == 0 {
            return Err(invalid("limits.max_batch_ops", "must be at least 1"));
        }
        for (field, value) in [
            ("limits.client_queue", limits.client_queue),
            ("limits.client_inflight_max", limits.client_inflight_max),
            (
                "limits.raft_inbound_batches_max",
                limits.raft_inbound_batches_max,
            ),
            ("limits.turn_inputs_max", limits.turn_inputs_max),
            ("limits.http_connections_max", limits.http_connections_max),
            ("limits.max_connections", limits.max_connections),
            (
                "limits.max_client_connections",
                limits.max_client_connections,
            ),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if limits.client_request_timeout_ms == 0 {
            return Err(invalid(
                "limits.client_request_timeout_ms",
                "must be at least 1",
            ));
        }
        for (field, value) in [
            (
                "limits.client_read_timeout_ms",
                limits.client_read_timeout_ms,
            ),
            (
                "limits.client_write_timeout_ms",
                limits.client_write_timeout_ms,
            ),
            (
                "limits.client_idle_timeout_ms",
                limits.client_idle_timeout_ms,
            ),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        if limits.client_timeout_max_ms < limits.client_request_timeout_ms
            || limits.client_timeout_max_ms > u64::from(u32::MAX)
        {
            return Err(invalid(
                "limits.client_timeout_max_ms",
                "must be at least limits.client_request_timeout_ms and at most 4294967295",
            ));
        }
        for (field, value) in [
            (
                "limits.raft_inbound_bytes_max",
                limits.raft_inbound_bytes_max,
            ),
            (
                "limits.client_inbound_bytes_max",
                limits.client_inbound_bytes_max,
            ),
        ] {
            if value < FRAME_BYTES_MAX {
                return Err(invalid(
                    field,
                    format!("must be at least {FRAME_BYTES_MAX} (the largest frame)"),
                ));
            }
        }
        if limits.session_idle_ms != 0
            && limits.session_idle_ms < limits.client_request_timeout_ms.saturating_mul(2)
        {
            return Err(invalid(
                "limits.session_idle_ms",
                "must be 0 (never) or at least twice limits.client_request_timeout_ms, so a \
                 client's retries land before its session expires",
            ));
        }
        if limits.watch_buffer_bytes_max < 1 << 20 {
            return Err(invalid(
                "limits.watch_buffer_bytes_max",
                "must be at least 1048576 (a largest value must fit)",
            ));
        }
        if limits.watchers_per_connection_max == 0 || limits.watchers_max == 0 {
            return Err(invalid(
                "limits.watchers_max",
                "watchers_max and watchers_per_connection_max must be at least 1",
            ));
        }
        if self.storage.cache_mib == 0 {
            return Err(invalid("storage.cache_mib", "must be at least 1"));
        }
        if self.storage.snapshot_max_mib == 0 || self.storage.snapshot_max_mib > 1 << 30 {
            return Err(invalid("storage.snapshot_max_mib", "must be in 1..=2^30"));
        }
        if self.storage.write_buffer_mib > 1 << 30 {
            return Err(invalid("storage.write_buffer_mib", "must be at most 2^30"));
        }
        if self.storage.writer_queue_depth == 0 || self.storage.writer_queue_depth > 64 {
            return Err(invalid("storage.writer_queue_depth", "must be in 1..=64"));
        }
        for (field, value) in [
            (
                "storage.snapshots_inbound_max",
                self.storage.snapshots_inbound_max,
            ),
            (
                "storage.snapshots_outbound_max",
                self.storage.snapshots_outbound_max,
            ),
        ] {
            if value == 0 || value > 64 {
                return Err(invalid(field, "must be in 1..=64"));
            }
        }
        self.validate_pd()
    }

    pub(super) fn validate_pd(&self) -> Result<()> {
        let pd = &self.pd;
        for (field, value) in [
            ("pd.tick_interval_ms", pd.tick_interval_ms),
            ("pd.heartbeat_interval_ms", pd.heartbeat_interval_ms),
            ("pd.request_timeout_ms", pd.request_timeout_ms),
        ] {
            if !(10..=600_000).contains(&value) {
                return Err(invalid(field, "must be in 10..=600000"));
            }
        }
        if pd.heartbeat_timeout_ms < 2 * pd.heartbeat_interval_ms {
            return Err(invalid(
                "pd.heartbeat_timeout_ms",
                "must be at least twice pd.heartbeat_interval_ms (one lost heartbeat must not \
                 mark a node down)",
            ));
        }
        self.pd_settings().validate().map_err(|error| match error {
            ringkv_pd::Error::InvalidSetting { name, reason } => Error::ConfigInvalid {
                field: pd_field(&name),
                reason: reason.into_owned(),
            },
            other => invalid("pd", other.to_string()),
        })
    }
}
