"""cloche inside `docker run` with the engine's defaults (no --privileged, default seccomp
and capabilities): ``auto`` picks the chroot isolation there, and a Dockerfile with RUN
steps builds. cloche runs from this checkout (bind-mounted read-only, with the interpreter
the virtualenv was made from); the container is Debian bookworm (localhost/golang:1.19) with
proot bound in from the host. The store is copied into the container's own overlayfs, which
refuses 0/0 whiteout devices even to root: the layers must still record deletions.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.engine.conftest import BASE, PROJECT, Builder
from tests.fixtures.services import require_tool

IMAGE = "localhost/golang:1.19"
PROOT = "/usr/bin/proot"
TALLOC = "/usr/lib/x86_64-linux-gnu/libtalloc.so.2"
PY = "/opt/py"
SITE = f"/work/main/.venv/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"

DOCKERFILE = f"""\
FROM {BASE} AS tools
RUN mkdir /out && echo tool > /out/tool

FROM {BASE}
RUN echo hello > /hello && rm /bin/true && mkdir -p /d/sub && chown 1000:1000 /d \\
 && echo x > /d/sub/x && ln -s hello /hello-link
RUN rm -rf /d/sub && mkdir /d/sub && echo y > /d/sub/y
RUN --mount=type=cache,target=/c sh -c 'echo x > /c/x && cp /c/x /cached'
RUN --mount=type=secret,id=tok sh -c 'test "$(cat /run/secrets/tok)" = s3cret && echo ok > /secret-ok'
RUN --mount=type=bind,from=tools,source=/out,target=/mnt cp /mnt/tool /tool
USER nobody
RUN echo n > /tmp/n && id -u > /tmp/uid
"""


def _docker_run(docker: str, mounts: dict[str, str], script: str,
                *extra: str) -> subprocess.CompletedProcess[str]:
    base = Path(sys.base_prefix)
    argv = [docker, "run", "--rm", *extra,
            "-e", f"LD_LIBRARY_PATH={PY}/lib", "-e", f"PYTHONPATH=/work/main/src:{SITE}",
            "-v", f"{base}:{PY}:ro", "-v", f"{PROJECT}:/work/main:ro",
            "-v", f"{PROOT}:{PROOT}:ro", "-v", f"{TALLOC}:{TALLOC}:ro"]
    for host, guest in mounts.items():
        argv += ["-v", f"{host}:{guest}"]
    argv += [IMAGE, "bash", "-c", script]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600)


@pytest.fixture
def ready(docker: str) -> str:
    require_tool(PROOT, "apt-get install proot")
    if subprocess.run([docker, "image", "inspect", IMAGE], capture_output=True).returncode:
        pytest.skip(f"{IMAGE} is not loaded in Docker")
    return docker


def _build_in_container(ready: str, template_store: Path, tmp_path: Path, output: str
                        ) -> tuple[subprocess.CompletedProcess[str], Path]:
    """DOCKERFILE built by cloche in a default container (a copy of the template store, the
    secret ``tok``), written as ``output`` under the returned folder (/out inside)."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (tmp_path / "tok").write_text("s3cret")
    out = tmp_path / "out"
    out.mkdir()
    script = (f"cp -a /template /store && {PY}/bin/python3 -m cloche.cli.main build "
              f"--root /store --progress plain --secret id=tok,src=/tok -o {output} /ctx")
    result = _docker_run(ready, {str(template_store): "/template:ro", str(ctx): "/ctx:ro",
                                 str(tmp_path / "tok"): "/tok:ro", str(out): "/out"}, script)
    return result, out


def test_build_in_unprivileged_container(ready: str, template_store: Path,
                                         tmp_path: Path) -> None:
    result, out = _build_in_container(ready, template_store, tmp_path,
                                      "type=tar,dest=/out/rootfs.tar")
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert output.count("isolation=chroot: RUN steps share this container's network") == 1
    with tarfile.open(out / "rootfs.tar") as tar:
        members = {m.name.lstrip("./"): m for m in tar.getmembers()}

        def text(name: str) -> str:
            f = tar.extractfile(members[name])
            assert f is not None
            return f.read().decode()

        assert text("hello") == "hello\n"
        assert "bin/true" not in members  # deleted in a layer: a whiteout
        assert members["hello-link"].issym() and members["hello-link"].linkname == "hello"
        assert (members["d"].uid, members["d"].gid) == (1000, 1000)
        assert "d/sub/x" not in members and text("d/sub/y") == "y\n"  # replaced directory
        assert text("cached") == "x\n"
        assert text("secret-ok") == "ok\n"
        assert not any(name.startswith("run/secrets/") for name in members)
        assert text("tool") == "tool\n"
        assert members["tmp/n"].uid == 65534 and text("tmp/uid") == "65534\n"


def _oci_layers(archive: Path) -> list[list[tuple]]:
    """The entries of each layer of an OCI archive, without their times."""
    with tarfile.open(archive) as outer:
        def blob(digest: str) -> bytes:
            f = outer.extractfile("blobs/sha256/" + digest.split(":", 1)[1])
            assert f is not None
            return f.read()

        index = json.loads(outer.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        layers = []
        for desc in manifest["layers"]:
            with tarfile.open(fileobj=io.BytesIO(blob(desc["digest"])), mode="r:*") as tar:
                entries = []
                for m in tar:
                    digest = ""
                    if m.isfile():
                        data = tar.extractfile(m)
                        digest = hashlib.sha256(data.read() if data else b"").hexdigest()
                    entries.append((m.name, m.type, m.mode, m.uid, m.gid, m.linkname, digest))
                layers.append(entries)
        return layers


def test_container_layers_equal_a_namespaces_build(ready: str, builder: Builder,
                                                  template_store: Path, tmp_path: Path) -> None:
    """The same Dockerfile built in the container (chroot, whiteouts in the xattr form on
    its overlayfs) and on the host (namespaces): the same layers, entry for entry."""
    from cloche.engine.options import SecretSpec, parse_output

    result, out = _build_in_container(ready, template_store, tmp_path,
                                      "type=oci,dest=/out/image.tar")
    assert result.returncode == 0, result.stdout + result.stderr
    builder.build(DOCKERFILE, isolation="namespaces",
                  secrets=(SecretSpec(id="tok", src=str(tmp_path / "tok")),),
                  outputs=(parse_output(f"type=oci,dest={tmp_path / 'host.tar'}"),))
    inside, host = _oci_layers(out / "image.tar"), _oci_layers(tmp_path / "host.tar")
    assert len(inside) == len(host)
    for n, (a, b) in enumerate(zip(inside, host)):
        assert a == b, f"layer {n}"
    assert any(e[0] == "bin/.wh.true" for layer in inside for e in layer)


def test_proot_missing_is_a_clear_error(ready: str, template_store: Path,
                                        tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {BASE}\nRUN true\n")
    script = (f"cp -a /template /store && rm -f /usr/bin/proot 2>/dev/null; "
              f"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin {PY}/bin/python3 -m "
              "cloche.cli.main build --root /store --progress plain /ctx")
    result = _docker_run(ready, {str(template_store): "/template:ro", str(ctx): "/ctx:ro"},
                         script)
    assert result.returncode != 0
    assert "needs proot" in result.stderr and "apt-get install proot" in result.stderr, \
        result.stderr


def test_docker_default_refuses_mount_namespaces(ready: str) -> None:
    """What ``auto`` rests on: a default container may not create a mount namespace."""
    script = (f"{PY}/bin/python3 -c 'from cloche.engine.isolation import resolve; "
              "print(resolve(\"auto\"))'")
    result = _docker_run(ready, {}, script)
    assert result.stdout.strip() == "chroot", result.stderr


