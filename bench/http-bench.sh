#!/bin/bash
# HTTP vs native benchmark on one local cluster (report only).
set -u
HERE=$(cd "$(dirname "$0")" && pwd); B=/tmp/http-bench; rm -rf $B; mkdir -p $B
R=${RELEASE_DIR:-target/release}; cp $R/ringkvd $R/ringctl $R/ringkv-bench $B/
cd $B
timeout 120 ./ringctl local up --dir $B/data > $B/up.log 2>&1 &
UP=$!
for i in $(seq 1 60); do grep -q "is up" $B/up.log && break; sleep 1; done
grep "is up" $B/up.log || { cat $B/up.log; kill $UP; exit 1; }
C="--cacert $B/data/certs/ca.pem --cert $B/data/certs/client-ringctl.pem --key $B/data/certs/client-ringctl.key"
echo "bench password 1234567890" | ./ringctl --config $B/data/ringctl.toml user add bench >/dev/null 2>&1
sleep 2
TOKEN=$(curl -s --cacert $B/data/certs/ca.pem -X POST --data-binary '{"user":"bench","password":"bench password 1234567890"}' https://127.0.0.11:8100/v1/auth/token | python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
curl -s -H "Authorization: Bearer $TOKEN" --cacert $B/data/certs/ca.pem -X PUT --data-binary v https://127.0.0.11:8100/v1/kv/hot -w "put %{http_code}\n"
echo "== HTTP get (256 connections, node 1)"; wrk -t2 -c256 -d8s -H "Authorization: Bearer $TOKEN" https://127.0.0.11:8100/v1/kv/hot | grep -E "Requests/sec|Non-2xx|Latency"
echo "== HTTP put"; wrk -t2 -c256 -d8s -s $HERE/http-bench-put.lua -H "Authorization: Bearer $TOKEN" https://127.0.0.11:8100/ | grep -E "Requests/sec|Non-2xx|Latency"
echo "== native get"; ./ringkv-bench --config $B/data/ringctl.toml --workload get --consistency linearizable --clients 256 --duration 8 2>&1 | tail -2
echo "== native put"; ./ringkv-bench --config $B/data/ringctl.toml --workload put --clients 256 --value-size 100 --duration 8 2>&1 | tail -2
kill $UP; wait $UP 2>/dev/null
