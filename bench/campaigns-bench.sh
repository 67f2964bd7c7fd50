#!/bin/bash
# Needless-election check (reports, asserts nothing): starts a fresh `ringctl local up`
# cluster, runs a 32-client mixed load for DURATION seconds with no faults, and prints each
# node's `ringkv_raft_campaigns_total` and `ringkv_raft_leader_changes_total` before and after.
# Campaigns that PD's leader balancing caused show in the node logs as "executing a PD order
# ... TransferLeader"; any other campaign means an election timeout fired without a failure.
# Usage: BIN_DIR=target/release bench/campaigns-bench.sh [DURATION]
#   env: PORT WORK_DIR; RINGKV_RAFT__ELECTION_TIMEOUT_TICKS etc. reach the nodes (compare
#   timings in one sitting).
set -u
BIN=$(cd "${BIN_DIR:-target/release}" && pwd)
PORT=${PORT:-7757}
DURATION=${1:-180}
W=${WORK_DIR:-/tmp/campaigns-bench}
rm -rf "$W"; mkdir -p "$W"
"$BIN/ringctl" local up --dir "$W/data" --port "$PORT" > "$W/up.log" 2>&1 &
UP=$!
trap 'kill -TERM $UP 2>/dev/null; wait' EXIT
for _ in $(seq 1 120); do grep -q "is up" "$W/up.log" && break; sleep 1; done
grep -q "is up" "$W/up.log" || { cat "$W/up.log"; exit 1; }
C=$W/data/certs
metric() { # node name (local up: node N listens on 127.0.0.1N, HTTP on PORT + 1000)
    curl -s --cacert "$C/ca.pem" --cert "$C/client-ringctl.pem" --key "$C/client-ringctl.key" \
        "https://127.0.0.1$1:$((PORT + 1000))/metrics" | awk -v m="$2" '$1 == m {print $2}'
}
report() {
    for n in 1 2 3; do
        echo "$1 node $n campaigns=$(metric "$n" ringkv_raft_campaigns_total)" \
            "leader_changes=$(metric "$n" ringkv_raft_leader_changes_total)"
    done
}
sleep 5
report before
"$BIN/ringkv-bench" --config "$W/data/ringctl.toml" --clients 32 --workload mixed \
    --duration "$DURATION" 2>&1 | tail -1
report after
echo "PD leader transfers executed:"
grep -h "TransferLeader" "$W"/data/node-*/ringkvd.log | wc -l
