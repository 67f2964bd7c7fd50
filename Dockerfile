# The ringkv image: ringkvd and ringctl on Debian bookworm, as a non-root user.
#
#   docker build -t ringkv .                       # where a registry is reachable
#   deploy/docker/build-local.sh                   # here: no registry (see docs/deploy.md)
#
# Stages: `runtime-base` (the OS layer, user, config), `runtime-prebuilt` (binaries from the
# build context's bin/, used by build-local.sh), `build` (cargo on the official Rust image) and
# `runtime` (the default target: runtime-base + binaries from `build`). The runtime stages come
# first so that even the classic builder never touches the Rust image for `runtime-prebuilt`.
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1.95-bookworm

FROM ${RUNTIME_IMAGE} AS runtime-base
# 1: install ca-certificates and curl with apt (debian:bookworm-slim has no curl); 0: the base
# has them already (build-local.sh's debootstrap base).
ARG INSTALL_RUNTIME_PACKAGES=1
RUN set -eux; \
    if [ "$INSTALL_RUNTIME_PACKAGES" = 1 ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends ca-certificates curl; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --system --gid 10001 ringkv; \
    useradd --system --uid 10001 --gid ringkv --home-dir /var/lib/ringkv --no-create-home ringkv; \
    mkdir -p /var/lib/ringkv/data /certs /etc/ringkv; \
    chown -R ringkv:ringkv /var/lib/ringkv /certs; \
    chmod 0700 /var/lib/ringkv /certs
COPY deploy/docker/ringctl.toml /etc/ringkv/ringctl.toml
COPY deploy/docker/entrypoint.sh /usr/local/bin/ringkv-entrypoint
# Defaults for a node in a container; every one can be overridden (docs/deploy.md lists the
# variables). The node id, cluster and initial_cluster/join come from the deployment.
ENV RINGKV_LISTEN_ADDR=0.0.0.0:7100 \
    RINGKV_HTTP_ADDR=0.0.0.0:8100 \
    RINGKV_DATA_DIR=/var/lib/ringkv/data \
    RINGKV_TLS__CA_CERT=/certs/ca.pem \
    RINGCTL_CONFIG=/etc/ringkv/ringctl.toml
VOLUME ["/var/lib/ringkv"]
# 7100/udp: QUIC (peers and clients); 8100/tcp: HTTPS API, /metrics, /livez, /readyz.
EXPOSE 7100/udp 8100/tcp
USER ringkv
WORKDIR /var/lib/ringkv
# Liveness only (the process answers). -k: a local probe over loopback; the certificate names
# the node's DNS names, not necessarily 127.0.0.1. Readiness (/readyz) is for orchestrators.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsSk https://127.0.0.1:8100/livez || exit 1
ENTRYPOINT ["/usr/local/bin/ringkv-entrypoint"]
CMD ["ringkvd"]

FROM runtime-base AS runtime-prebuilt
# ringkv-bench: the load generator and linearizability checker the container tests run inside
# the compose network.
COPY bin/ringkvd bin/ringctl bin/ringkv-bench /usr/local/bin/

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# ringkv-bench in its own cargo invocation: its checker (ringkv-sim) turns on ringkv-raft's
# `planted-bugs`, which must not be unified into ringkvd.
RUN cargo build --release --locked --bin ringkvd --bin ringctl \
    && cargo build --release --locked -p ringkv-bench --features check --bin ringkv-bench \
    && cp target/release/ringkvd target/release/ringctl target/release/ringkv-bench \
       /usr/local/bin/

FROM runtime-base AS runtime
COPY --from=build /usr/local/bin/ringkvd /usr/local/bin/ringctl /usr/local/bin/ringkv-bench \
    /usr/local/bin/
