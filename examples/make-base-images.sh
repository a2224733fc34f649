#!/bin/bash
# Make, on this machine and without Docker Hub, the two base images of examples/go-hello:
#
#   localhost/golang:GOVERSION         Debian bookworm (debootstrap minbase) with golang-go,
#                                      configured like Docker Hub's golang image
#   localhost/distroless/static:nonroot  a distroless/static-like image made from files:
#                                      no shell, no libc; passwd/group with root and
#                                      nonroot (65532), nsswitch.conf, CA certificates,
#                                      /tmp (1777), /home/nonroot
#
# Both are imported into the cloche store with `cloche import`; with --push HOST they are also
# pushed to that registry as HOST/library/golang:GOVERSION and HOST/distroless/static:nonroot.
#
# The debootstrapped root filesystem is cached in $CLOCHE_EXAMPLES_CACHE
# (default /var/cache/cloche-examples): the first run downloads ~100 MB of Debian packages
# and takes a few minutes, later runs reuse it. Delete that directory to start over.
#
# Usage: examples/make-base-images.sh [--cloche CMD] [--root STORE] [--push HOST]
#   --cloche CMD  how to run cloche (default: `cloche` on PATH; may be several words)
#   --root STORE  the cloche store to import into (default: cloche's own default)
#   --push HOST   also push both images to the registry HOST (e.g. 127.0.0.1:5000)
#
# Progress goes to stderr. stdout gets two lines a script can read:
#   GOLANG_IMAGE=<reference>
#   RUNTIME_IMAGE=<reference>
# (the registry references with --push, else the local store names).
# Needs root (debootstrap, file ownership) and debootstrap (apt-get install debootstrap).
set -euo pipefail

CLOCHE="cloche"
STORE_ROOT=""
PUSH_HOST=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cloche) CLOCHE="$2"; shift 2 ;;
        --root) STORE_ROOT="$2"; shift 2 ;;
        --push) PUSH_HOST="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "make-base-images: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

CACHE="${CLOCHE_EXAMPLES_CACHE:-/var/cache/cloche-examples}"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
GO_ROOTFS="$CACHE/golang-$SUITE-rootfs"
# Fixed timestamps for the files made here, so the runtime image is the same on every run.
EPOCH="${SOURCE_DATE_EPOCH:-1700000000}"

read -r -a cloche_cmd <<< "$CLOCHE"
store_args=()
[ -n "$STORE_ROOT" ] && store_args=(--root "$STORE_ROOT")
say() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'make-base-images: %s\n' "$*" >&2; exit 1; }
cloche() { "${cloche_cmd[@]}" "$@"; }

[ "$(id -u)" = 0 ] || fail "needs root (debootstrap and file ownership); run it with sudo"
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] ||
    fail "debootstrap is not installed: apt-get install debootstrap"
command -v "${cloche_cmd[0]}" >/dev/null || fail "cannot run cloche as '$CLOCHE' (use --cloche)"
export PATH="$PATH:/usr/sbin:/sbin"

# --- 1. The golang rootfs: debootstrap once, then reuse ------------------------------------
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9  # two runs at once (parallel tests) share one debootstrap
if [ -f "$GO_ROOTFS.complete" ]; then
    say "golang rootfs: reusing $GO_ROOTFS (delete it to debootstrap again)"
else
    partial="$GO_ROOTFS.partial"
    rm -rf "$partial" "$GO_ROOTFS" "$GO_ROOTFS.complete"
    say "golang rootfs: debootstrap $SUITE with golang-go from $MIRROR (a few minutes, once)"
    started=$SECONDS
    if ! debootstrap --variant=minbase --include=golang-go,ca-certificates \
            "$SUITE" "$partial" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE/debootstrap.log" >&2
        fail "debootstrap failed (full log: $CACHE/debootstrap.log)"
    fi
    # What Docker Hub's images leave out: downloaded packages and apt's lists.
    rm -rf "$partial"/var/cache/apt/archives/*.deb "$partial"/var/cache/apt/*.bin \
           "$partial"/var/lib/apt/lists/* "$partial"/debootstrap
    # GOPATH as in the golang image: /go, writable by any user.
    mkdir -p "$partial/go/src" "$partial/go/bin"
    chmod -R 1777 "$partial/go"
    mv "$partial" "$GO_ROOTFS"
    cat /proc/sys/kernel/random/uuid >"$GO_ROOTFS.complete"
    say "golang rootfs: done in $((SECONDS - started)) s"
fi
# The marker names this debootstrap; the image records it, so a store that has it skips import.
rootfs_id=$(cat "$GO_ROOTFS.complete")
if [ -z "$rootfs_id" ]; then
    rootfs_id=$(cat /proc/sys/kernel/random/uuid)
    echo "$rootfs_id" >"$GO_ROOTFS.complete"
fi
go_dir=$(cd "$GO_ROOTFS/usr/lib" && ls -d go-1.* | sort -V | tail -n 1)
GO_VERSION="${go_dir#go-}"
[ -x "$GO_ROOTFS/usr/lib/$go_dir/bin/go" ] || fail "no go binary in $GO_ROOTFS/usr/lib/$go_dir"
flock -u 9

# --- 2. Import it as localhost/golang:VERSION ---------------------------------------------
GO_PATH_ENV="/go/bin:/usr/lib/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Images record the rootfs they came from in this label; an unchanged one is not imported again
# (so the image keeps its digest, and builds on it keep their cache).
ROOTFS_LABEL="org.cloche.examples.rootfs"
stored_from() {  # stored_from NAME ID: is NAME in the store, imported from rootfs ID?
    local stored
    stored=$(cloche inspect "${store_args[@]}" --format json "$1" 2>/dev/null || true)
    [[ "$stored" == *"\"$ROOTFS_LABEL\": \"$2\""* ]]
}
if stored_from "localhost/golang:$GO_VERSION" "$rootfs_id"; then
    say "localhost/golang:$GO_VERSION: already in the store, imported from this rootfs"
else
    say "import localhost/golang:$GO_VERSION (about 600 MB, half a minute)"
    cloche import "${store_args[@]}" "$GO_ROOTFS" "localhost/golang:$GO_VERSION" \
        -m "debootstrap --variant=minbase --include=golang-go,ca-certificates $SUITE" \
        -c "ENV PATH=$GO_PATH_ENV" -c "ENV GOPATH=/go" -c "ENV GOLANG_VERSION=$GO_VERSION" \
        -c "LABEL $ROOTFS_LABEL=$rootfs_id" -c "WORKDIR /go" -c 'CMD ["bash"]' >/dev/null
fi

# --- 3. The distroless/static-like rootfs, made from files --------------------------------
say "make the distroless/static-like rootfs"
static=$(mktemp -d)
trap 'rm -rf "$static"' EXIT
s="$static/rootfs"
mkdir -p "$s"/etc/ssl/certs "$s"/tmp "$s"/root "$s"/home/nonroot "$s"/var "$s"/usr/share
cat >"$s/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$s/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
GROUP
echo 'hosts: files dns' >"$s/etc/nsswitch.conf"
cat >"$s/etc/os-release" <<'OSRELEASE'
PRETTY_NAME="Distroless-like static image (cloche examples/make-base-images.sh)"
NAME="Distroless"
ID=distroless
HOME_URL="https://github.com/GoogleContainerTools/distroless"
OSRELEASE
cp "$GO_ROOTFS/etc/ssl/certs/ca-certificates.crt" "$s/etc/ssl/certs/ca-certificates.crt"
if [ -d "$GO_ROOTFS/usr/share/zoneinfo" ]; then  # distroless/static carries tzdata
    cp -a "$GO_ROOTFS/usr/share/zoneinfo" "$s/usr/share/zoneinfo"
fi
chown -R 0:0 "$s"
chmod 0755 "$s" "$s"/etc "$s"/home "$s"/var "$s"/usr "$s"/usr/share
chmod 0644 "$s"/etc/passwd "$s"/etc/group "$s"/etc/nsswitch.conf "$s"/etc/os-release
chmod 1777 "$s/tmp"
chmod 0700 "$s/root" "$s/home/nonroot"
chown 65532:65532 "$s/home/nonroot"
find "$s" -exec touch -h -d "@$EPOCH" {} +

static_id=$(tar -C "$s" --sort=name --numeric-owner -cf - . | sha256sum | cut -c1-32)
if stored_from "localhost/distroless/static:nonroot" "$static_id"; then
    say "localhost/distroless/static:nonroot: already in the store, with these files"
else
    say "import localhost/distroless/static:nonroot"
    cloche import "${store_args[@]}" "$s" "localhost/distroless/static:nonroot" \
        -m "distroless/static-like, made from files" \
        -c "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        -c "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
        -c "LABEL $ROOTFS_LABEL=$static_id" -c "USER 65532" -c "WORKDIR /home/nonroot" >/dev/null
fi

# --- 4. Push them ----------------------------------------------------------------------------
golang_ref="localhost/golang:$GO_VERSION"
runtime_ref="localhost/distroless/static:nonroot"
if [ -n "$PUSH_HOST" ]; then
    say "push to $PUSH_HOST"
    cloche push "${store_args[@]}" -q "$golang_ref" "$PUSH_HOST/library/golang:$GO_VERSION" >/dev/null
    cloche push "${store_args[@]}" -q "$runtime_ref" "$PUSH_HOST/distroless/static:nonroot" >/dev/null
    golang_ref="$PUSH_HOST/library/golang:$GO_VERSION"
    runtime_ref="$PUSH_HOST/distroless/static:nonroot"
fi
echo "GOLANG_IMAGE=$golang_ref"
echo "RUNTIME_IMAGE=$runtime_ref"
