#!/bin/sh
# ringkv image entrypoint: fills per-node defaults, then runs the command (ringkvd by default).
# - RINGKV_NODE_ID_FROM_HOSTNAME=1 (Kubernetes StatefulSet): node id = pod ordinal + 1
#   (`ringkv-0` -> 1). The variable is removed before ringkvd starts (it is not a config field).
# - The node certificate defaults to /certs/node-<id>.pem and .key.
set -e
if [ -n "${RINGKV_NODE_ID_FROM_HOSTNAME:-}" ] && [ -z "${RINGKV_NODE_ID:-}" ]; then
  host="$(hostname)"
  ordinal="${host##*-}"
  case "$ordinal" in
    ''|*[!0-9]*) echo "ringkv-entrypoint: hostname $host does not end in -<ordinal>" >&2; exit 2 ;;
  esac
  RINGKV_NODE_ID=$((ordinal + 1))
  export RINGKV_NODE_ID
fi
unset RINGKV_NODE_ID_FROM_HOSTNAME
if [ -n "${RINGKV_NODE_ID:-}" ]; then
  export RINGKV_TLS__CERT="${RINGKV_TLS__CERT:-/certs/node-${RINGKV_NODE_ID}.pem}"
  export RINGKV_TLS__KEY="${RINGKV_TLS__KEY:-/certs/node-${RINGKV_NODE_ID}.key}"
fi
exec "$@"
