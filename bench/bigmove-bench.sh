#!/bin/bash
# Snapshot memory benchmark (reports, asserts nothing): peak RSS of the sending and the
# receiving node while one large shard moves to a new node.
#  1. `ringctl local up` with one shard (`initial_shards = 1`), the balance and split schedulers
#     off and a short log-compaction threshold (so the new replica needs a snapshot, not a log
#     replay);
#  2. `ringkv-bench --workload get` preloads KEYS keys of VALUE_SIZE bytes (default 7,936 x
#     128 KiB = 992 MiB of values: just under the 1 GiB `snapshot_bytes_max`), then reads
#     for a second;
#  3. `ringctl local add-node` starts node 4; `ringctl move-shard 1 --from <a follower> --to 4
#     --wait` moves a replica to it. The leader streams the snapshot.
#  4. While the move runs, VmRSS of the leader (sender) and of node 4 (receiver) is sampled every
#     200 ms from /proc; the sender's VmHWM is reset (clear_refs 5) just before the move, so both
#     peaks belong to the move. Prints the samples' maxima, VmHWM, the move's wall time and the
#     nodes' snapshot log lines.
# Usage: BIN_DIR=target/release bench/bigmove-bench.sh
#   env: PORT KEYS VALUE_SIZE CLIENTS WORK_DIR (deleted at the end unless KEEP=1)
set -u
BIN=$(cd "${BIN_DIR:-target/release}" && pwd)
PORT=${PORT:-7600}
KEYS=${KEYS:-7936}
VALUE_SIZE=${VALUE_SIZE:-131072}
CLIENTS=${CLIENTS:-16}
W=${WORK_DIR:-/tmp/bigmove-bench}
rm -rf "$W"; mkdir -p "$W"
CONF=$W/data/ringctl.toml
UP=""
ADD=""
SAMPLER=""

cleanup() {
    [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
    [ -n "$ADD" ] && kill -TERM "$ADD" 2>/dev/null
    [ -n "$UP" ] && kill -TERM "$UP" 2>/dev/null
    wait 2>/dev/null
    [ "${KEEP:-0}" = 1 ] || rm -rf "$W"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
ringctl() { env -u RINGCTL_ENDPOINTS "$BIN/ringctl" --config "$CONF" "$@"; }
status_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null; }

# Every node (those of `local up` and the added one) reads these.
export RINGKV_INITIAL_SHARDS=1
export RINGKV_PD__SPLIT=false
export RINGKV_PD__BALANCE_REPLICAS=false
export RINGKV_PD__BALANCE_LEADERS=false
export RINGKV_RAFT__LOG_COMPACTION_ENTRIES=${LOG_COMPACTION_ENTRIES:-1000}

"$BIN/ringctl" local up --dir "$W/data" --port "$PORT" > "$W/up.log" 2>&1 &
UP=$!
for _ in $(seq 1 120); do grep -q "is up" "$W/up.log" && break; sleep 1; done
grep -q "is up" "$W/up.log" || { cat "$W/up.log"; exit 1; }
declare -A PIDS
while read -r node pid; do PIDS[$node]=$pid; done < <(
    sed -n 's/^started node \([0-9]*\) (pid \([0-9]*\)).*/\1 \2/p' "$W/up.log")

echo "== load: $KEYS keys x $VALUE_SIZE bytes, $CLIENTS clients"
start=$(now_ms)
"$BIN/ringkv-bench" --config "$CONF" --workload get --keys "$KEYS" --value-size "$VALUE_SIZE" \
    --clients "$CLIENTS" --duration 1 > "$W/load.out" 2>&1 || { cat "$W/load.out"; exit 1; }
load_ms=$(( $(now_ms) - start ))
echo "loaded in $load_ms ms ($(( KEYS * VALUE_SIZE / 1024 * 1000 / load_ms / 1024 )) MiB/s)"
ringctl shards --json > "$W/shards.json"
leader=$(jq -r '.shards[] | select(.id == 1) | .leader' "$W/shards.json")
from=$(jq -r '[.shards[] | select(.id == 1) | .replicas[] | .node
    | select(. != '"$leader"')] | first' "$W/shards.json")
echo "shard 1: leader $leader, moving the replica of node $from; PD's view:"
jq -c '.shards[] | select(.id == 1)' "$W/shards.json"
for n in 1 2 3; do
    echo "node $n before the move: VmRSS $(status_kb "${PIDS[$n]}" VmRSS) kB," \
        "VmHWM $(status_kb "${PIDS[$n]}" VmHWM) kB, data dir $(du -sm "$W/data/node-$n/data" | cut -f1) MiB"
done

"$BIN/ringctl" local add-node --dir "$W/data" > "$W/add.log" 2>&1 &
ADD=$!
for _ in $(seq 1 120); do
    ringctl nodes --json 2>/dev/null | jq -e '.nodes[] | select(.id == 4 and .state == "Up")' \
        > /dev/null && break
    sleep 1
done
receiver=$(pgrep -f "node-4/ringkvd.toml" | head -1)
[ -n "$receiver" ] || { cat "$W/add.log"; exit 1; }
sender=${PIDS[$leader]}
echo "sender: node $leader (pid $sender), receiver: node 4 (pid $receiver)"

echo 5 > "/proc/$sender/clear_refs"
echo 5 > "/proc/$receiver/clear_refs"
(
    while true; do
        echo "$(now_ms) $(status_kb "$sender" VmRSS) $(status_kb "$receiver" VmRSS)"
        sleep 0.2
    done
) > "$W/rss.txt" &
SAMPLER=$!
start=$(now_ms)
ringctl move-shard 1 --from "$from" --to 4 --wait > "$W/move.out" 2>&1
code=$?
move_ms=$(( $(now_ms) - start ))
kill "$SAMPLER"; SAMPLER=""
tail -3 "$W/move.out"
echo "move: $move_ms ms (exit $code)"
awk 'NF == 3 { if ($2 > s) s = $2; if ($3 > r) r = $3; n++ }
    END { printf "samples %d, max VmRSS: sender %d MB, receiver %d MB\n", n, s * 1.024 / 1000,
        r * 1.024 / 1000 }' "$W/rss.txt"
echo "VmHWM since the move began: sender $(( $(status_kb "$sender" VmHWM) * 1024 / 1000000 )) MB," \
    "receiver $(( $(status_kb "$receiver" VmHWM) * 1024 / 1000000 )) MB"
echo "receiver data dir: $(du -sm "$W/data/node-4/data" | cut -f1) MiB"
grep -h "snapshot" "$W/data/node-$leader/ringkvd.log" "$W/data/node-4/ringkvd.log" \
    | grep -v DEBUG | tail -8 | cut -c1-300
