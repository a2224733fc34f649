#!/bin/bash
# `make image`: build cloche's own image (image/Dockerfile) with cloche, without Docker Hub.
#
#   1. the base, once: Debian bookworm made with `debootstrap --variant=minbase` and the
#      packages cloche needs at run time (python3, proot, uidmap, libcap2-bin,
#      slirp4netns, ca-certificates; util-linux is in minbase), cached in $CLOCHE_IMAGE_CACHE
#      (default /var/cache/cloche-image) and imported as localhost/cloche-base:SUITE
#      (again only when that rootfs or the package list changed);
#   2. the wheels: cloche's own, built from this checkout (its working tree, uncommitted
#      edits included), and its dependencies' for the base's Python and libc, downloaded by
#      the host's pip (so with the host's index, proxy and CA settings);
#   3. `cloche build --network=none -f image/Dockerfile -t TAG` on a context holding only
#      those wheels.
#
# Usage: image/build.sh [--cloche CMD] [--python PY] [--root STORE] [--tag TAG]
#   --cloche CMD  how to run cloche (default: cloche on PATH; may be several words)
#   --python PY   the Python whose pip builds and downloads the wheels (default: python3)
#   --root STORE  the cloche store (default: cloche's own default)
#   --tag TAG     the image's name (default: cloche:dev)
# Then, to run it with Docker: cloche save --format docker TAG | docker load
# Needs root (debootstrap) and debootstrap; the first run downloads ~40 MB of Debian packages.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
PROJECT="$(dirname "$HERE")"
CLOCHE="cloche"
PYTHON="python3"
STORE_ROOT=""
TAG="cloche:dev"
while [ $# -gt 0 ]; do
    case "$1" in
        --cloche) CLOCHE="$2"; shift 2 ;;
        --python) PYTHON="$2"; shift 2 ;;
        --root) STORE_ROOT="$2"; shift 2 ;;
        --tag) TAG="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "image/build.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

CACHE="${CLOCHE_IMAGE_CACHE:-/var/cache/cloche-image}"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# libcap2-bin: setcap, for newuidmap's file capabilities (image/Dockerfile says why)
PACKAGES="python3,proot,uidmap,libcap2-bin,slirp4netns,ca-certificates"
ROOTFS="$CACHE/base-$SUITE-rootfs"
BASE="localhost/cloche-base:$SUITE"
ROOTFS_LABEL="org.cloche.image.rootfs"

read -r -a cloche_cmd <<< "$CLOCHE"
store_args=()
[ -n "$STORE_ROOT" ] && store_args=(--root "$STORE_ROOT")
say() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'image/build.sh: %s\n' "$*" >&2; exit 1; }
cloche() { "${cloche_cmd[@]}" "$@"; }

[ "$(id -u)" = 0 ] || fail "needs root (debootstrap, and the build's RUN steps); run it with sudo"
export PATH="$PATH:/usr/sbin:/sbin"
command -v debootstrap >/dev/null || fail "debootstrap is not installed: apt-get install debootstrap"
command -v "${cloche_cmd[0]}" >/dev/null || fail "cannot run cloche as '$CLOCHE' (use --cloche)"
"$PYTHON" -m pip --version >/dev/null 2>&1 || fail "no pip for $PYTHON (use --python)"

# --- 1. The base rootfs: debootstrap once, then reuse -----------------------------------------
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9  # two runs at once share one debootstrap
if [ -f "$ROOTFS.complete" ] && [ "$(cat "$ROOTFS.packages" 2>/dev/null)" = "$PACKAGES" ]; then
    say "base rootfs: reusing $ROOTFS (delete it to debootstrap again)"
else
    partial="$ROOTFS.partial"
    rm -rf "$partial" "$ROOTFS" "$ROOTFS.complete" "$ROOTFS.packages"
    say "base rootfs: debootstrap $SUITE with $PACKAGES from $MIRROR (a minute or two, once)"
    started=$SECONDS
    if ! debootstrap --variant=minbase --include="$PACKAGES" \
            "$SUITE" "$partial" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE/debootstrap.log" >&2
        fail "debootstrap failed (full log: $CACHE/debootstrap.log)"
    fi
    # What a container image leaves out: downloaded packages, apt's lists, manuals and
    # translations (the copyright files stay).
    rm -rf "$partial"/var/cache/apt/archives/*.deb "$partial"/var/cache/apt/*.bin \
           "$partial"/var/lib/apt/lists/* "$partial"/debootstrap \
           "$partial"/usr/share/man "$partial"/usr/share/info "$partial"/usr/share/locale \
           "$partial"/var/log/*.log "$partial"/var/cache/debconf/*-old
    find "$partial/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$partial/usr/share/doc" -mindepth 1 -type d -empty -delete
    mv "$partial" "$ROOTFS"
    echo "$PACKAGES" >"$ROOTFS.packages"
    cat /proc/sys/kernel/random/uuid >"$ROOTFS.complete"
    say "base rootfs: done in $((SECONDS - started)) s"
fi
rootfs_id=$(cat "$ROOTFS.complete")
flock -u 9

# --- 2. Import it as localhost/cloche-base:SUITE ---------------------------------------------
stored=$(cloche inspect "${store_args[@]}" --format json "$BASE" 2>/dev/null || true)
if [[ "$stored" == *"\"$ROOTFS_LABEL\": \"$rootfs_id\""* ]]; then
    say "$BASE: already in the store, imported from this rootfs"
else
    say "import $BASE"
    cloche import "${store_args[@]}" "$ROOTFS" "$BASE" \
        -m "debootstrap --variant=minbase --include=$PACKAGES $SUITE" \
        -c "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        -c "LABEL $ROOTFS_LABEL=$rootfs_id" -c 'CMD ["bash"]' >/dev/null
fi

# --- 3. The wheels --------------------------------------------------------------------------
work="$(mktemp -d /tmp/cloche-image.XXXXXX)"
trap 'rm -rf "$work"' EXIT
wheels="$work/context/wheels"
mkdir -p "$wheels" "$work/src"
# The base's Python and libc decide which binary wheels (isal, zstandard) fit.
read -r py_version libc_version machine < <(chroot "$ROOTFS" /usr/bin/python3 -c \
    'import platform, sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}",
     platform.libc_ver()[1], platform.machine())')
py_tag="cp${py_version/./}"
# pip takes each platform tag literally: every manylinux tag this glibc runs, newest first.
platforms=()
for ((minor = ${libc_version#*.}; minor >= 17; minor--)); do
    platforms+=(--platform "manylinux_2_${minor}_$machine")
done
platforms+=(--platform "manylinux2014_$machine")
say "wheels: cloche from $PROJECT, its dependencies for $py_tag, glibc $libc_version, $machine"
# A copy of what the wheel is made of, so that building leaves nothing in the checkout.
cp -a "$PROJECT/pyproject.toml" "$PROJECT/README.md" "$work/src/"
tar -C "$PROJECT" --exclude=__pycache__ --exclude='*.egg-info' -cf - src | tar -C "$work/src" -xf -
pip=("$PYTHON" -m pip --disable-pip-version-check)
"${pip[@]}" wheel --quiet --no-deps --wheel-dir "$wheels" "$work/src" >&2
"${pip[@]}" download --quiet --dest "$wheels" --only-binary=:all: \
    --python-version "$py_version" --implementation cp --abi "$py_tag" \
    "${platforms[@]}" "$wheels"/cloche-*.whl pip >&2

# --- 4. The image ---------------------------------------------------------------------------
say "cloche build -t $TAG"
cloche build "${store_args[@]}" --network=none --build-arg "BASE_IMAGE=$BASE" \
    -f "$HERE/Dockerfile" -t "$TAG" "$work/context"
say "done: $TAG (to run it with Docker: cloche save --format docker $TAG | docker load)"
