"""cloche's own image (image/Dockerfile, `make image`), run by the Docker engine.

The image is built once for the module by image/build.sh (debootstrap base, cached in
/var/cache/cloche-image; wheels from this checkout; `cloche build`) into a store of its own,
loaded into Docker with `cloche save --format docker | docker load`, and removed from Docker
at the end. Each test then runs it the way docs/container.md says, and reads the images the
builds inside write to the bind-mounted workspace (OCI archives) with Python's tarfile.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.golang import GO_HELLO, GoBaseImages
from tests.fixtures.services import Registry, require_root, require_tool

pytestmark = [pytest.mark.docker, pytest.mark.root]

PROJECT = Path(__file__).resolve().parents[2]
# one per process: pytest-xdist workers each build the module's image, and each removes its own
TAG = f"cloche:test-image-{os.getpid()}"
TUN = "/dev/net/tun"
# What each mode needs of `docker run` (docs/container.md, "Which settings give which mode")
UNCONFINED = ["--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined"]
ROOT_MODE = ["--user", "0", *UNCONFINED, "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN"]
ROOTLESS_MODE = [*UNCONFINED, "--security-opt", "systempaths=unconfined"]
RUN_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && mkdir -p /app && \\
echo made >/app/made.txt && chown 1000:1000 /app/made.txt && chmod 0640 /app/made.txt && \\
ln -s made.txt /app/link && id -u >/app/uid"]
"""


@pytest.fixture(scope="module")
def image(docker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """cloche:test-image-PID in Docker, built by `image/build.sh` with this checkout's cloche."""
    require_root()
    require_tool("debootstrap", "apt-get install debootstrap")
    cloche = str(Path(sys.executable).with_name("cloche"))
    store = tmp_path_factory.mktemp("image-store")
    subprocess.run([str(PROJECT / "image" / "build.sh"), "--cloche", cloche,
                    "--python", sys.executable, "--root", str(store), "--tag", TAG],
                   check=True, stdout=subprocess.DEVNULL, timeout=900)
    save = subprocess.Popen([cloche, "save", "--root", str(store), "--format", "docker", TAG],
                            stdout=subprocess.PIPE)
    loaded = subprocess.run([docker, "load"], stdin=save.stdout, capture_output=True,
                            text=True, timeout=300)
    assert save.wait(300) == 0 and loaded.returncode == 0, loaded.stderr
    yield TAG
    subprocess.run([docker, "rmi", "-f", TAG], capture_output=True, timeout=120)


def _workspace(tmp_path: Path, dockerfile: str, files: dict[str, bytes] | None = None) -> Path:
    """A context the image's user (uid 1000) may read and write its output into."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "Dockerfile").write_text(dockerfile)
    for name, data in (files or {}).items():
        (ws / name).write_bytes(data)
    if "RUN" in dockerfile:
        shutil.copy2(require_tool("/usr/bin/busybox", "apt-get install busybox-static"),
                     ws / "busybox")
    os.chmod(ws, 0o777)
    return ws


def _run(docker: str, image: str, ws: Path, *args: str, flags: tuple[str, ...] = ()
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([docker, "run", "--rm", *flags, "-v", f"{ws}:/workspace", image,
                           *args], capture_output=True, text=True, timeout=300)


def _build(docker: str, image: str, ws: Path, *build_args: str, flags: tuple[str, ...] = ()
           ) -> dict[str, tuple[str, int, int, int, bytes]]:
    """`cloche build` in the container, to /workspace/out.tar; the image's files."""
    done = _run(docker, image, ws, "build", "--progress=plain", *build_args,
                "-o", "type=oci,dest=/workspace/out.tar", "/workspace", flags=flags)
    assert done.returncode == 0, done.stderr
    skopeo = require_tool("skopeo", "apt-get install skopeo")
    subprocess.run([skopeo, "inspect", f"oci-archive:{ws / 'out.tar'}"], check=True,
                   capture_output=True, timeout=60)
    return _files(ws / "out.tar")


def _files(archive: Path) -> dict[str, tuple[str, int, int, int, bytes]]:
    """path -> (type, mode, uid, gid, content or link target) over the image's layers."""
    with tarfile.open(archive) as oci:
        def blob(digest: str) -> bytes:
            member = oci.extractfile("blobs/sha256/" + digest.split(":", 1)[1])
            assert member is not None
            return member.read()

        index_file = oci.extractfile("index.json")
        assert index_file is not None
        index = json.loads(index_file.read())
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        out: dict[str, tuple[str, int, int, int, bytes]] = {}
        for layer in manifest["layers"]:
            data = blob(layer["digest"])
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for m in tar:
                    kind = "dir" if m.isdir() else "link" if m.issym() else "file"
                    body = m.linkname.encode() if m.issym() else b""
                    if m.isfile():
                        f = tar.extractfile(m)
                        body = f.read() if f else b""
                    out["/" + m.name.removeprefix("./").rstrip("/")] = (kind, m.mode, m.uid, m.gid, body)
    return out


def test_image_config_and_user(docker: str, image: str) -> None:
    """Entrypoint cloche, a non-root user with subordinate ranges, HOME, /workspace, and
    nothing of the build (wheels, pip) in the final image."""
    info = json.loads(subprocess.run([docker, "image", "inspect", image], check=True,
                                     capture_output=True, text=True).stdout)[0]["Config"]
    assert info["Entrypoint"] == ["cloche"]
    assert info["User"] == "cloche"
    assert info["WorkingDir"] == "/workspace"
    assert "HOME=/home/cloche" in info["Env"]
    assert set(info["Volumes"]) == {"/home/cloche/.local/share/cloche", "/var/lib/cloche"}
    version = subprocess.run([docker, "run", "--rm", image, "--version"], capture_output=True,
                             text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("cloche, version"), version
    probe = subprocess.run(
        [docker, "run", "--rm", "--entrypoint", "sh", image, "-c",
         "id; cat /etc/subuid /etc/subgid; echo $HOME; "
         "for t in python3 proot newuidmap newgidmap slirp4netns unshare; do command -v $t; done; "
         "ls /wheels /opt/cloche/bin/pip 2>&1; stat -c '%a %U' /usr/bin/newuidmap; "
         "getcap /usr/bin/newuidmap /usr/bin/newgidmap"],
        capture_output=True, text=True, timeout=120)
    lines = probe.stdout.splitlines()
    assert lines[0] == "uid=1000(cloche) gid=1000(cloche) groups=1000(cloche)"
    assert lines[1:4] == ["cloche:100000:65536", "cloche:100000:65536", "/home/cloche"]
    assert [os.path.basename(p) for p in lines[4:10]] == [
        "python3", "proot", "newuidmap", "newgidmap", "slirp4netns", "unshare"]
    assert "No such file" in lines[10] and "No such file" in lines[11]
    # file capabilities, not setuid: setuid newuidmap needs CAP_SYS_ADMIN in a container
    assert lines[12:] == ["755 root", "/usr/bin/newuidmap cap_setuid=ep",
                          "/usr/bin/newgidmap cap_setgid=ep"]


def test_build_without_run_in_a_default_container(docker: str, image: str,
                                                  tmp_path: Path) -> None:
    """The documented use, with Docker's defaults: FROM scratch + COPY writes an image."""
    ws = _workspace(tmp_path, "FROM scratch\nCOPY hello.txt /hello.txt\n",
                    {"hello.txt": b"hello from the workspace\n"})
    files = _build(docker, image, ws)
    assert files["/hello.txt"] == ("file", 0o644, 0, 0, b"hello from the workspace\n")


# RUN steps as root and as another user, with no chown inside RUN (as the image's default
# user, the chroot mode cannot keep one: docs/isolation.md)
USER_RUN_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && mkdir -p /app /tmp && \\
chmod 1777 /tmp && echo made >/app/made.txt && chmod 4750 /app/made.txt && \\
ln -s made.txt /app/link && id -u >/app/uid"]
COPY --chown=1000:1000 hello.txt /app/hello.txt
USER 1000:1000
RUN echo user >/tmp/user.txt && id -u >/tmp/uid && mkdir /tmp/d
"""


def test_run_as_the_default_user_in_a_default_container(docker: str, image: str,
                                                        tmp_path: Path) -> None:
    """The documented command as it stands, RUN steps included: the image's user (uid 1000)
    with Docker's defaults may make no user namespace, so ``auto`` runs the steps under
    proot as that user, owners recorded in xattrs; the image is the one a root build with
    namespaces makes, file for file."""
    ws = _workspace(tmp_path, USER_RUN_DOCKERFILE, {"hello.txt": b"hello\n"})
    sandboxed = _build(docker, image, ws, "--network=none", flags=tuple(ROOT_MODE))
    # Docker's defaults, then what Kubernetes' "restricted" profile adds (no capability at
    # all, no privilege escalation)
    for flags in ((), ("--cap-drop", "ALL", "--security-opt", "no-new-privileges")):
        done = _run(docker, image, ws, "build", "--progress=plain",
                    "-o", "type=oci,dest=/workspace/out.tar", "/workspace", flags=flags)
        assert done.returncode == 0, done.stderr
        assert done.stderr.count("isolation=chroot as uid 1000") == 1, done.stderr
        default_user = _files(ws / "out.tar")
        assert default_user == sandboxed, flags
    assert default_user["/app/made.txt"] == ("file", 0o4750, 0, 0, b"made\n")
    assert default_user["/app/hello.txt"][1:4] == (0o644, 1000, 1000)
    assert default_user["/tmp/user.txt"] == ("file", 0o644, 1000, 1000, b"user\n")
    assert default_user["/tmp/d"][:4] == ("dir", 0o755, 1000, 1000)
    assert default_user["/app/uid"][4] == b"0\n" and default_user["/tmp/uid"][4] == b"1000\n"


def test_run_as_root_with_namespaces(docker: str, image: str, tmp_path: Path) -> None:
    """--user 0 with SYS_ADMIN and NET_ADMIN, unconfined: the namespaces sandbox, on
    --network=none and on the default network (slirp4netns, with the tun device)."""
    ws = _workspace(tmp_path, RUN_DOCKERFILE)
    for extra in (("--network=none",), ()):
        flags = (*ROOT_MODE, "--device", TUN) if not extra else tuple(ROOT_MODE)
        files = _build(docker, image, ws, *extra, flags=flags)
        assert files["/app/made.txt"] == ("file", 0o640, 1000, 1000, b"made\n")
        assert files["/app/link"][0::4] == ("link", b"made.txt")
        assert files["/app/uid"][4] == b"0\n"


def test_run_rootless_in_container_matches_root(docker: str, image: str,
                                                tmp_path: Path) -> None:
    """As the image's user (rootless mode: a user namespace, newuidmap with the image's
    ranges), unconfined and with /proc unmasked: the RUN layer is the one root makes."""
    if os.path.exists(TUN) and stat.S_IMODE(os.stat(TUN).st_mode) != 0o666:
        os.chmod(TUN, 0o666)  # what udev sets; a container's user opens the host's node
    ws = _workspace(tmp_path, RUN_DOCKERFILE)
    as_root = _build(docker, image, ws, "--network=none", flags=tuple(ROOT_MODE))
    rootless = _build(docker, image, ws, flags=(*ROOTLESS_MODE, "--device", TUN))
    assert rootless == as_root
    assert rootless["/app/made.txt"] == ("file", 0o640, 1000, 1000, b"made\n")
    offline = _build(docker, image, ws, "--network=none", flags=tuple(ROOTLESS_MODE))
    assert offline == as_root


def test_rootless_in_container_says_what_the_container_lacks(docker: str, image: str,
                                                            tmp_path: Path) -> None:
    """Docker's masked /proc, and no /dev/net/tun: errors whose hints name the setting."""
    ws = _workspace(tmp_path, RUN_DOCKERFILE)
    masked = _run(docker, image, ws, "build", "--network=none", "/workspace",
                  flags=tuple(UNCONFINED))
    assert masked.returncode != 0
    assert "mount /proc" in masked.stderr and "systempaths=unconfined" in masked.stderr, \
        masked.stderr
    no_tun = _run(docker, image, ws, "build", "/workspace", flags=tuple(ROOTLESS_MODE))
    assert no_tun.returncode != 0
    assert "/dev/net/tun" in no_tun.stderr and f"--device {TUN}" in no_tun.stderr, \
        no_tun.stderr


def test_run_as_root_in_a_default_container(docker: str, image: str, tmp_path: Path) -> None:
    """`--user 0` with Docker's defaults: no namespaces may be made, the build runs its RUN
    steps under proot (--isolation=chroot, which the image carries) and writes the layer the
    namespaces sandbox writes."""
    ws = _workspace(tmp_path, RUN_DOCKERFILE)
    sandboxed = _build(docker, image, ws, "--network=none", flags=tuple(ROOT_MODE))
    chroot = _build(docker, image, ws, "--isolation=chroot", flags=("--user", "0"))
    assert chroot == sandboxed


def test_the_go_example_in_a_default_container(docker: str, image: str, tmp_path: Path,
                                               go_base_images: GoBaseImages,
                                               auth_registry: Registry) -> None:
    """Issue 10's third way (root and a user: tests/rootless/test_go_example.py): the Go
    example with a secret and its cache mount, built by cloche's own image as its default
    user with Docker's defaults (no namespaces: proot), pulling its bases from the loopback
    registry and pushing the result with the user's credentials; its files are the files of
    the same build as root on the host."""
    ws = tmp_path / "ws"
    shutil.copytree(GO_HELLO, ws)
    dockerfile = (ws / "Dockerfile").read_text().replace(
        "RUN go version\n", "RUN go version\nRUN --mount=type=secret,id=token "
        "test \"$(cat /run/secrets/token)\" = s3cret && ! test -e /run/secrets/token.kept\n")
    assert "id=token" in dockerfile
    (ws / "Dockerfile").write_text(dockerfile)
    (ws / "token").write_text("s3cret")
    for folder, _dirs, names in os.walk(ws):
        os.chmod(folder, 0o777)
        for name in names:
            os.chmod(os.path.join(folder, name), 0o644)
    host = subprocess.run(
        [sys.executable, "-m", "cloche.cli.main", "build", "--root", str(tmp_path / "host"),
         *go_base_images.build_args, "--secret", f"id=token,src={ws / 'token'}",
         "-o", f"type=oci,dest={tmp_path / 'host.tar'}", str(ws)],
        capture_output=True, text=True, timeout=1800)
    assert host.returncode == 0, host.stderr
    docker_config = tmp_path / "docker-config.json"
    auth = base64.b64encode(f"{auth_registry.username}:{auth_registry.password}".encode())
    docker_config.write_text(json.dumps({"auths": {auth_registry.host: {"auth": auth.decode()}}}))
    os.chmod(docker_config, 0o644)
    target = f"{auth_registry.host}/image/go-hello:1"
    done = _run(docker, image, ws, "build", "--progress=plain", *go_base_images.build_args,
                "--secret", "id=token,src=/workspace/token", "-t", target, "--push",
                "-o", "type=oci,dest=/workspace/out.tar", "/workspace",
                flags=("--network", "host",
                       "-v", f"{docker_config}:/home/cloche/.docker/config.json:ro"))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("isolation=chroot as uid 1000") == 1, done.stderr
    assert _files(ws / "out.tar") == _files(tmp_path / "host.tar")
    skopeo = require_tool("skopeo", "apt-get install skopeo")
    pushed = json.loads(subprocess.run(
        [skopeo, "inspect", "--config", "--tls-verify=false", "--creds",
         f"{auth_registry.username}:{auth_registry.password}", f"docker://{target}"],
        check=True, capture_output=True, text=True, timeout=120).stdout)
    assert len(pushed["rootfs"]["diff_ids"]) == 2 and pushed["config"]["User"] == "nonroot"
