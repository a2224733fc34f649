#!/bin/sh
# BuildKit v0.23.2, the reference the conformance goldens are recorded with (not used in CI).
#
#   tests/conformance/buildkit.sh build              build buildkitd and buildctl (cached)
#   tests/conformance/buildkit.sh start [HOST:PORT]  start buildkitd (as root); HOST:PORT is an
#                                                    insecure HTTP registry it may pull from
#   tests/conformance/buildkit.sh stop               stop the buildkitd started here
#   tests/conformance/buildkit.sh buildctl ARGS...   run buildctl against that buildkitd
#
# BUILDKIT_ROOT (its state, default /var/lib/buildkit-golden) and BUILDKIT_RUNDIR (socket, pid,
# config, log; default /run/buildkit-golden) give a second buildkitd its own state and socket
# (bench/second_machine.py), so it does not stop or wipe the one the goldens are recorded with.
#
# The source is the moby/buildkit git mirror (BUILDKIT_GIT, tag v0.23.2); the toolchain is
# Debian's golang-1.23 from bookworm-backports (GO): vendored modules, no module proxy.
# buildkitd is built with the Dockerfile front end's labs build tags (its release/labs/tags:
# COPY --parents, COPY/ADD --exclude, RUN --security, RUN --device), as the
# docker/dockerfile:VERSION-labs image is; a Dockerfile without those flags builds the same.
set -eu

VERSION=v0.23.2
BUILDKIT_GIT=${BUILDKIT_GIT:-/work/.mirror/moby+buildkit/repo}
GO=${GO:-/usr/lib/go-1.23/bin/go}
CACHE=${BUILDKIT_CACHE:-/var/cache/cloche-buildkit/$VERSION}
BIN=$CACHE/bin
ROOT=${BUILDKIT_ROOT:-/var/lib/buildkit-golden}
RUNDIR=${BUILDKIT_RUNDIR:-/run/buildkit-golden}
ADDR=unix://$RUNDIR/buildkitd.sock
TAGS=${BUILDKIT_TAGS-dfrunsecurity dfparents dfexcludepatterns dfrundevice}

die() { echo "buildkit.sh: $*" >&2; exit 1; }

build() {
    if [ -x "$BIN/buildkitd" ] && [ -x "$BIN/buildctl" ] \
        && [ "$(cat "$BIN/tags" 2>/dev/null)" = "$TAGS" ]; then
        return 0
    fi
    [ -x "$GO" ] || die "no Go toolchain at $GO (apt-get install -t bookworm-backports golang-1.23-go)"
    [ -d "$BUILDKIT_GIT" ] || die "no BuildKit git directory at $BUILDKIT_GIT"
    src=$CACHE/src
    rm -rf "$src"
    mkdir -p "$src" "$BIN"
    git --git-dir="$BUILDKIT_GIT" archive "$VERSION" | tar -x -C "$src"
    commit=$(git --git-dir="$BUILDKIT_GIT" rev-parse "$VERSION^{commit}")
    ldflags="-X github.com/moby/buildkit/version.Version=$VERSION"
    ldflags="$ldflags -X github.com/moby/buildkit/version.Revision=$commit"
    ldflags="$ldflags -X github.com/moby/buildkit/version.Package=github.com/moby/buildkit"
    (
        cd "$src"
        export CGO_ENABLED=0 GOFLAGS=-mod=vendor GOTOOLCHAIN=local GOPROXY=off
        export GOCACHE="$CACHE/gocache" GOPATH="$CACHE/gopath"
        for cmd in buildkitd buildctl; do
            nice -n 10 "$GO" build -trimpath -tags "$TAGS" -ldflags "$ldflags" \
                -o "$BIN/$cmd.tmp" "./cmd/$cmd"
            mv "$BIN/$cmd.tmp" "$BIN/$cmd"
        done
    )
    echo "$TAGS" >"$BIN/tags"
    rm -rf "$src"
}

ctl() {
    exec "$BIN/buildctl" --addr "$ADDR" "$@"
}

stop() {
    pidfile=$RUNDIR/buildkitd.pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    fi
    rm -f "$pidfile" "$RUNDIR/buildkitd.sock"
}

start() {
    [ "$(id -u)" = 0 ] || die "buildkitd runs as root here"
    build
    command -v runc >/dev/null || die "no runc (apt-get install runc)"
    stop
    mkdir -p "$RUNDIR" "$ROOT"
    config=$RUNDIR/buildkitd.toml
    {
        echo "root = \"$ROOT\""
        echo "[worker.oci]"
        echo "  enabled = true"
        echo "  snapshotter = \"overlayfs\""
        echo "[worker.containerd]"
        echo "  enabled = false"
        for host in "$@"; do
            echo "[registry.\"$host\"]"
            echo "  http = true"
            echo "  insecure = true"
        done
    } >"$config"
    PATH=$BIN:$PATH nohup "$BIN/buildkitd" --config "$config" --root "$ROOT" \
        --addr "$ADDR" --oci-worker=true --oci-worker-snapshotter=overlayfs \
        --containerd-worker=false >"$RUNDIR/buildkitd.log" 2>&1 &
    echo $! >"$RUNDIR/buildkitd.pid"
    i=0
    until "$BIN/buildctl" --addr "$ADDR" debug workers >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -gt 300 ] || ! kill -0 "$(cat "$RUNDIR/buildkitd.pid")" 2>/dev/null; then
            cat "$RUNDIR/buildkitd.log" >&2
            die "buildkitd did not start"
        fi
        sleep 0.1
    done
}

case "${1:-}" in
    build) build; echo "$BIN" ;;
    start) shift; start "$@"; echo "$ADDR" ;;
    stop) stop ;;
    buildctl) shift; [ -x "$BIN/buildctl" ] || die "not built: run '$0 build'"; ctl "$@" ;;
    bin) echo "$BIN" ;;
    *) die "usage: $0 build | start [REGISTRY_HOST:PORT...] | stop | buildctl ARGS... | bin" ;;
esac
