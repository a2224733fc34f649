#!/bin/bash
# `make demo`: cloche's classic multi-stage build, end to end, on this machine.
#
# A Go program (examples/go-hello) is compiled in a golang image and copied alone into a
# distroless/static-like image. Both base images are made here (examples/make-base-images.sh:
# debootstrap, cached in /var/cache/cloche-examples) and served by a docker-registry on
# loopback, so no Docker Hub is needed. Then: cloche plan, cloche build, cloche images,
# cloche inspect, and the image runs (with Docker when an engine answers, else flattened).
#
# Usage: examples/demo.sh [CLOCHE]   (default: cloche on PATH; `make demo` passes .venv/bin/cloche)
# Needs: root, debootstrap, docker-registry (Debian packages); Docker is optional.
set -euo pipefail

CLOCHE="${1:-cloche}"
HERE="$(cd "$(dirname "$0")" && pwd)"
EXAMPLE="$HERE/go-hello"
TAG="go-hello:demo"
DOCKER="${DOCKER:-/usr/bin/docker}"  # Debian's docker.io client; DOCKER=none skips Docker
REGISTRY_BIN="${REGISTRY_BIN:-/usr/bin/docker-registry}"

if [ -t 1 ]; then
    step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
else
    step() { printf '\n==> %s\n' "$*"; }
fi
show() { printf '$ %s\n' "$*"; "$@"; }

# --- What this machine needs ----------------------------------------------------------------
missing=()
[ "$(id -u)" = 0 ] || { echo "demo: run it as root (cloche's build sandbox and debootstrap need root)" >&2; exit 1; }
command -v "$CLOCHE" >/dev/null || { echo "demo: cannot run cloche as '$CLOCHE'" >&2; exit 1; }
[ -x /usr/sbin/debootstrap ] || command -v debootstrap >/dev/null || missing+=(debootstrap)
[ -x "$REGISTRY_BIN" ] || missing+=(docker-registry)
command -v slirp4netns >/dev/null || missing+=(slirp4netns)  # the network of RUN steps
if [ ${#missing[@]} -gt 0 ] && [ "${CLOCHE_DEMO_INSTALL:-1}" = 1 ] && command -v apt-get >/dev/null; then
    # A fresh Debian machine: `make demo` is one of the two set-up commands, so it installs
    # what it needs (CLOCHE_DEMO_INSTALL=0 turns that off).
    step "Installing ${missing[*]} (Debian packages the demo needs)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    missing=()
    [ -x /usr/sbin/debootstrap ] || command -v debootstrap >/dev/null || missing+=(debootstrap)
    [ -x "$REGISTRY_BIN" ] || missing+=(docker-registry)
    command -v slirp4netns >/dev/null || missing+=(slirp4netns)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "demo: missing on this machine: ${missing[*]}" >&2
    echo "      install with: apt-get install ${missing[*]}" >&2
    exit 1
fi

work="$(mktemp -d /tmp/cloche-demo.XXXXXX)"
registry_pid=""
cleanup() {
    # The registry goes away: forget the names the build pulled from it (the blobs stay, as
    # localhost/golang and localhost/distroless/static).
    if [ -n "${GOLANG_IMAGE:-}" ]; then
        "$CLOCHE" rmi "$GOLANG_IMAGE" "$RUNTIME_IMAGE" >/dev/null 2>&1 || true
    fi
    if [ -n "$registry_pid" ]; then
        kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# --- A registry on loopback, for the two base images --------------------------------------
step "Start a docker-registry on loopback"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
REGISTRY="127.0.0.1:$port"
cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: $REGISTRY
EOF
"$REGISTRY_BIN" serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$registry_pid" 2>/dev/null || { cat "$work/registry.log" >&2; exit 1; }
    sleep 0.1
done
echo "registry at http://$REGISTRY (pid $registry_pid, stopped at the end)"

# --- The two base images ----------------------------------------------------------------------
step "Make the base images (golang from debootstrap, distroless/static from files)"
"$HERE/make-base-images.sh" --cloche "$CLOCHE" --push "$REGISTRY" >"$work/bases.env"
GOLANG_IMAGE="$(sed -n 's/^GOLANG_IMAGE=//p' "$work/bases.env")"
RUNTIME_IMAGE="$(sed -n 's/^RUNTIME_IMAGE=//p' "$work/bases.env")"
echo "GOLANG_IMAGE=$GOLANG_IMAGE"
echo "RUNTIME_IMAGE=$RUNTIME_IMAGE"
args=(--build-arg "GOLANG_IMAGE=$GOLANG_IMAGE" --build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE")

# --- Plan and build ---------------------------------------------------------------------------
step "What the build will do (the test stage is not needed, so it is skipped)"
show "$CLOCHE" plan "${args[@]}" "$EXAMPLE"

step "Build it"
show "$CLOCHE" build --progress=plain "${args[@]}" -t "$TAG" "$EXAMPLE"

step "The image in cloche's store"
show "$CLOCHE" images
show "$CLOCHE" inspect "$TAG"

# --- Run it -------------------------------------------------------------------------------------
if [ -x "$DOCKER" ] && "$DOCKER" info >/dev/null 2>&1; then
    step "Run it with Docker"
    echo "\$ $CLOCHE save --format docker $TAG | $DOCKER load"
    "$CLOCHE" save --format docker "$TAG" | "$DOCKER" load
    show "$DOCKER" run --rm "$TAG"
else
    step "No Docker engine answers: flatten the image and run the program directly"
    show "$CLOCHE" build --progress=quiet "${args[@]}" -o "type=local,dest=$work/rootfs" "$EXAMPLE"
    show ls -l "$work/rootfs/usr/local/bin/go-hello"
    # As the image's USER nonroot (65532) would run it; the static binary needs nothing else.
    chmod 0755 "$work"
    show setpriv --reuid 65532 --regid 65532 --clear-groups "$work/rootfs/usr/local/bin/go-hello"
fi

step "Done: $TAG was built from two stages; only the runtime stage's layers were shipped"
