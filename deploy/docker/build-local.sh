#!/usr/bin/env bash
# Builds the ringkv image `ringkv:dev` with no container registry: the base image is made from
# Debian's packages (debootstrap a minimal bookworm, `docker import`) and cached; the binaries
# come from the host's release build; the runtime stage of the repository's Dockerfile is built
# on that base. Where a registry is reachable, `docker build -t ringkv .` does the whole job.
#
# Environment: RINGKV_IMAGE (default ringkv:dev), RINGKV_BASE_IMAGE (default
# ringkv-base:bookworm), DEBIAN_MIRROR (default http://deb.debian.org/debian),
# RINGKV_SKIP_CARGO=1 to reuse target/release binaries as they are, CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
image="${RINGKV_IMAGE:-ringkv:dev}"
base="${RINGKV_BASE_IMAGE:-ringkv-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
target_dir="${CARGO_TARGET_DIR:-target}"
# BUILD_PROFILE=debug packs debug binaries (quick local tries; the default is release).
profile="${BUILD_PROFILE:-release}"

# 1. The base image, made once and cached in the engine.
if docker image inspect "$base" >/dev/null 2>&1; then
  echo "== base image $base: cached"
else
  if ! command -v debootstrap >/dev/null 2>&1; then
    echo "== installing debootstrap"
    apt-get update -qq && apt-get install -y -qq debootstrap
  fi
  root="$(mktemp -d /tmp/ringkv-base.XXXXXX)"
  trap 'rm -rf "$root"' EXIT
  echo "== debootstrap --variant=minbase bookworm (a few minutes)"
  # ca-certificates and curl: the runtime stage installs nothing (no apt index in the base),
  # so what it needs is in the base already. curl serves the health checks.
  debootstrap --variant=minbase --include=ca-certificates,curl bookworm "$root" "$mirror" \
    >/tmp/ringkv-debootstrap.log 2>&1 || { tail -20 /tmp/ringkv-debootstrap.log; exit 1; }
  # Trim what a runtime image does not need.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
  tar -C "$root" -c . | docker import --change 'CMD ["/bin/bash"]' - "$base"
  rm -rf "$root"
  trap - EXIT
fi

# 2. The binaries, built on the host (same glibc generation as bookworm's: the host is bookworm).
if [ "${RINGKV_SKIP_CARGO:-0}" != 1 ]; then
  echo "== cargo build ($profile) --bin ringkvd --bin ringctl"
  flags=()
  if [ "$profile" = release ]; then flags=(--release); fi
  cargo build "${flags[@]}" --bin ringkvd --bin ringctl
  # Its own invocation, so that `--features check` stays out of the ringkvd above (ringkv-sim no
  # longer turns on ringkv-raft's `planted-bugs`; .ci/check-planted-bugs guards that).
  echo "== cargo build -p ringkv-bench --features check (separately)"
  cargo build "${flags[@]}" -p ringkv-bench --features check --bin ringkv-bench
fi
context="$(mktemp -d /tmp/ringkv-context.XXXXXX)"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/bin" "$context/deploy"
for bin in ringkvd ringctl ringkv-bench; do
  cp "$target_dir/$profile/$bin" "$context/bin/"
done
cp Dockerfile "$context/"
cp -r deploy/docker "$context/deploy/docker"

# 3. The Dockerfile's runtime stage on the local base, binaries from the context.
echo "== docker build --target runtime-prebuilt -t $image"
docker build --target runtime-prebuilt \
  --build-arg RUNTIME_IMAGE="$base" \
  --build-arg INSTALL_RUNTIME_PACKAGES=0 \
  -t "$image" "$context"
docker image inspect "$image" --format "== $image: {{.Size}} bytes"
