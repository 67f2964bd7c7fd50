#!/bin/bash
# Failover benchmark (reports, asserts nothing). On a fresh `ringctl local up` cluster:
#  1. ringctl commands with node 1 (the first endpoint of ringctl.toml) killed: wall time of
#     each (kv put, kv get, status, nodes), then node 1 is restarted;
#  2. `ringkv-bench --failover-report` runs a closed-loop load (one key per client) while the
#     script SIGKILLs the node leading the most shards KILLS times (restarting it after each)
#     and SIGSTOPs it STOPS times for 2 to 6 s; the bench prints each event's outage (longest
#     per-key interval without a completed operation) and p50/p99/max per kind.
# Usage: BIN_DIR=target/release bench/failover-bench.sh
#   env: PORT KILLS STOPS CLIENTS WORK_DIR; TICK_MS sets every node's raft.tick_ms (the election
#   timeout is 10 ticks: default 100 ms, so elections start 1 to 2 s after a leader goes quiet).
set -u
[ -n "${TICK_MS:-}" ] && export RINGKV_RAFT__TICK_MS=$TICK_MS
BIN=$(cd "${BIN_DIR:-target/release}" && pwd)
PORT=${PORT:-7300}
KILLS=${KILLS:-20}
STOPS=${STOPS:-20}
CLIENTS=${CLIENTS:-32}
W=${WORK_DIR:-/tmp/failover-bench}
rm -rf "$W"; mkdir -p "$W"
EVENTS=$W/events.txt
: > "$EVENTS"
CONF=$W/data/ringctl.toml
declare -A PIDS
UP=""
BENCH=""

cleanup() {
    [ -n "$BENCH" ] && kill -TERM "$BENCH" 2>/dev/null
    for node in "${!PIDS[@]}"; do
        kill -CONT "${PIDS[$node]}" 2>/dev/null
    done
    # Nodes this script restarted are its own children; `local up` stops the others.
    for pid in $(jobs -p); do
        [ "$pid" != "$UP" ] && kill -TERM "$pid" 2>/dev/null
    done
    [ -n "$UP" ] && kill -TERM "$UP" 2>/dev/null
    wait 2>/dev/null
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
ringctl() { env -u RINGCTL_ENDPOINTS "$BIN/ringctl" --config "$CONF" "$@"; }

"$BIN/ringctl" local up --dir "$W/data" --port "$PORT" > "$W/up.log" 2>&1 &
UP=$!
for _ in $(seq 1 120); do grep -q "is up" "$W/up.log" && break; sleep 1; done
grep -q "is up" "$W/up.log" || { cat "$W/up.log"; exit 1; }
while read -r node pid; do PIDS[$node]=$pid; done < <(
    sed -n 's/^started node \([0-9]*\) (pid \([0-9]*\)).*/\1 \2/p' "$W/up.log")

kill_node() { # node signal
    kill "-$2" "${PIDS[$1]}"
    if [ "$2" = KILL ]; then
        while kill -0 "${PIDS[$1]}" 2>/dev/null && ! grep -q ' Z ' "/proc/${PIDS[$1]}/stat" 2>/dev/null; do
            sleep 0.05
        done
    fi
}
restart_node() { # node
    "$BIN/ringkvd" --config "$W/data/node-$1/ringkvd.toml" >> "$W/data/node-$1/ringkvd.log" 2>&1 &
    PIDS[$1]=$!
}
# The Up node leading the most shards (PD's view).
busiest_leader() {
    ringctl nodes --json 2>/dev/null \
        | jq -r '[.nodes[] | select(.state == "Up")] | max_by(.leaders) | .id'
}

echo "== ringctl with node 1 killed (wall ms per command)"
ringctl kv put failover-probe v > /dev/null
kill_node 1 KILL
sleep 1
for command in "kv put failover-probe v2" "kv get failover-probe" "status" "nodes" \
    "kv put failover-probe v3" "kv get failover-probe"; do
    start=$(now_ms)
    # shellcheck disable=SC2086
    ringctl $command > "$W/cmd.out" 2>&1
    code=$?
    echo "ringctl $command: $(( $(now_ms) - start )) ms (exit $code)"
done
restart_node 1
sleep 8

echo "== load with $KILLS SIGKILLs and $STOPS SIGSTOPs of the busiest leader"
"$BIN/ringkv-bench" --config "$CONF" --failover-report "$EVENTS" --clients "$CLIENTS" \
    --workload mixed --duration 3600 > "$W/bench.out" 2>&1 &
BENCH=$!
sleep 5
for i in $(seq 1 "$KILLS"); do
    node=$(busiest_leader)
    [ -z "$node" ] || [ "$node" = null ] && { echo "no leader found"; sleep 2; continue; }
    echo "$(now_ms) kill $node" >> "$EVENTS"
    kill_node "$node" KILL
    sleep 4
    restart_node "$node"
    sleep 10
    echo "kill $i/$KILLS: node $node"
done
for i in $(seq 1 "$STOPS"); do
    node=$(busiest_leader)
    [ -z "$node" ] || [ "$node" = null ] && { echo "no leader found"; sleep 2; continue; }
    pause=$(( 2 + RANDOM % 5 ))
    echo "$(now_ms) stop $node" >> "$EVENTS"
    kill_node "$node" STOP
    sleep "$pause"
    kill -CONT "${PIDS[$node]}"
    sleep 10
    echo "stop $i/$STOPS: node $node for $pause s"
done
echo end >> "$EVENTS"
wait "$BENCH"
BENCH=""
cat "$W/bench.out"
