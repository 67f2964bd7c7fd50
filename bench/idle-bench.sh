#!/bin/bash
# Idle-cost benchmark (reports, asserts nothing): starts a fresh `ringctl local up` cluster of 3
# nodes whose configs ask for SHARDS initial shards (replication factor 3), waits until every
# shard has a leader (the time is printed), lets it settle, then samples each node for WINDOW
# seconds with nothing written: CPU (% of one core, from /proc/PID/stat), resident memory
# (VmRSS, and its peak VmHWM), and bytes written to storage (/proc/PID/io write_bytes).
# Usage: BIN_DIR=target/release bench/idle-bench.sh [SHARDS] [WINDOW]
#   env: PORT WORK_DIR SETTLE (seconds between all-led and the window, default 10)
set -u
BIN=$(cd "${BIN_DIR:-target/release}" && pwd)
PORT=${PORT:-7857}
SHARDS=${1:-16}
WINDOW=${2:-30}
SETTLE=${SETTLE:-10}
W=${WORK_DIR:-/tmp/idle-bench}
rm -rf "$W"; mkdir -p "$W"
# Every node reads RINGKV_INITIAL_SHARDS (the config layering's environment variable).
export RINGKV_INITIAL_SHARDS=$SHARDS
START=$(date +%s.%N)
"$BIN/ringctl" local up --dir "$W/data" --port "$PORT" > "$W/up.log" 2>&1 &
UP=$!
trap 'kill -TERM $UP 2>/dev/null; wait' EXIT
for _ in $(seq 1 300); do grep -q "is up" "$W/up.log" && break; sleep 1; done
grep -q "is up" "$W/up.log" || { cat "$W/up.log"; exit 1; }
ctl() { "$BIN/ringctl" --config "$W/data/ringctl.toml" "$@"; }
# All led: the status table lists SHARDS + 1 (PD) groups and no "without a known leader" line.
LED=""
for _ in $(seq 1 600); do
    OUT=$(ctl status 2>/dev/null)
    ROWS=$(echo "$OUT" | awk '$1 ~ /^s[0-9]+$/ || $1 == "pd"' | awk '$3 != "-"' | wc -l)
    if [ "$ROWS" -ge $((SHARDS + 1)) ] && ! echo "$OUT" | grep -q "without a known leader"; then
        LED=$(echo "$(date +%s.%N) - $START" | bc)
        break
    fi
    sleep 0.5
done
[ -n "$LED" ] || { echo "not every shard got a leader within 300 s"; ctl status | tail -3; exit 1; }
printf 'shards=%s every shard led after %.1f s (from the start of `local up`)\n' "$SHARDS" "$LED"
sleep "$SETTLE"
PIDS=$(for n in 1 2 3; do pgrep -f "ringkvd.*$W/data/node-$n/ringkvd.toml"; done)
ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
wbytes() { awk '$1 == "write_bytes:" {print $2}' "/proc/$1/io"; }
declare -A T0 B0
for p in $PIDS; do T0[$p]=$(ticks "$p"); B0[$p]=$(wbytes "$p"); done
sleep "$WINDOW"
n=0
for p in $PIDS; do
    n=$((n + 1))
    T1=$(ticks "$p"); B1=$(wbytes "$p")
    RSS=$(awk '$1 == "VmRSS:" {print $2}' "/proc/$p/status")
    HWM=$(awk '$1 == "VmHWM:" {print $2}' "/proc/$p/status")
    CPU=$(echo "scale=2; ($T1 - ${T0[$p]}) / $WINDOW" | bc)
    WR=$(echo "scale=1; ($B1 - ${B0[$p]}) / $WINDOW / 1024" | bc)
    echo "node $n pid $p: cpu=${CPU}% of a core rss=$((RSS / 1024))MiB peak=$((HWM / 1024))MiB" \
        "written=${WR}KiB/s over ${WINDOW}s idle"
done
