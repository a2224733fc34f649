"""cloche as a user who is not root inside `docker run` with the engine's defaults: no
capability, Docker's seccomp profile (no user namespace), so no chown, mknod or mount. ``auto``
falls back to the chroot isolation as that user, owners recorded in xattrs
(cloche.fs.owners), and the image's layers are those of a root build with namespaces on the
host, entry for entry (name, type, mode, owner, link, content); the one documented difference,
a chown inside RUN, is checked on its own. cloche runs from this checkout as in
test_chroot_docker.py (the interpreter and proot bound in, localhost/golang:1.19).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.engine.conftest import BASE, Builder
from tests.isolation.test_chroot_docker import PY, _docker_run, _oci_layers
from tests.isolation.test_chroot_docker import ready as ready

UID = 1000
USER_FLAGS = ("--user", f"{UID}:{UID}", "-e", "HOME=/tmp/home")

# multi-stage; RUN writing, deleting and changing modes (setuid, setgid on a file and on a
# directory); COPY --chown and COPY --from (owners kept from a stage); directories and files
# whose modes deny their owner writing (0555, 0444), written by RUN and COPY; USER nobody with
# RUN writing /tmp, a WORKDIR made for that user, a cache mount and a secret
DOCKERFILE = f"""\
FROM {BASE} AS tools
RUN mkdir -p /out/sub && echo tool > /out/tool && chmod 4755 /out/tool \\
 && echo g > /out/sub/g && chmod 2711 /out/sub/g && ln -s tool /out/tool-link
COPY --chown=1000:1000 a.txt /out/owned.txt

FROM {BASE}
COPY --from=tools /out /opt/tools
COPY --chown=1000:1000 a.txt /home/app/a.txt
COPY --chown=nobody a.txt /srv/b.txt
RUN echo hello > /hello && rm /bin/true && rm -rf /home/app/gone \\
 && mkdir -p /d/sub && chmod 2775 /d && echo x > /d/sub/x && chmod 4750 /d/sub/x \\
 && chmod 0600 /etc/passwd && ln -s hello /hello-link && ln /hello /hello-hard
RUN rm -rf /d/sub && mkdir /d/sub && echo y > /d/sub/y && chmod 0444 /d/sub/y
RUN --mount=type=cache,target=/c sh -c 'echo x > /c/x && cp /c/x /cached'
RUN --mount=type=secret,id=tok sh -c 'test "$(cat /run/secrets/tok)" = s3cret && echo ok > /secret-ok'
RUN echo appended >> /home/app/a.txt && chmod 0640 /home/app/a.txt
RUN mkdir -p /ro/sub && echo r > /ro/f && chmod 0555 /ro /ro/sub && chmod 0444 /ro/f
COPY a.txt /ro/sub/deep/a.txt
RUN echo more >> /ro/f && touch /ro/new
USER nobody
WORKDIR /work/app
RUN echo n > /tmp/n && id -u > /tmp/uid && mkdir /tmp/dir && echo f > /tmp/dir/f \\
 && echo here > here.txt && chmod 0700 /tmp/dir
USER root
RUN echo root > /tmp/dir/by-root
"""


def _context(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "a.txt").write_text("a\n")
    (tmp_path / "tok").write_text("s3cret")
    for path in (tmp_path, ctx, ctx / "Dockerfile", ctx / "a.txt", tmp_path / "tok"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return ctx


def _build_in_container(docker: str, template: Path, tmp_path: Path, ctx: Path,
                        *args: str) -> tuple[Path, str]:
    """`cloche build` as uid 1000 with Docker's defaults; the OCI archive and the output."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    out.chmod(0o777)
    readable = tmp_path / "template"  # the store is private (0700): a copy the user may read
    if not readable.exists():
        shutil.copytree(template, readable, symlinks=True)
        subprocess.run(["chmod", "-R", "a+rX", str(readable)], check=True)
    script = (f"id -u && cp -r /template /tmp/store && {PY}/bin/python3 -m cloche.cli.main "
              "build --root /tmp/store --progress plain --secret id=tok,src=/tok "
              f"{' '.join(args)} -o type=oci,dest=/out/image.tar /ctx")
    result = _docker_run(docker, {str(readable): "/template:ro", str(ctx): "/ctx:ro",
                                  str(tmp_path / "tok"): "/tok:ro", str(out): "/out"},
                         script, *USER_FLAGS)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert result.stdout.startswith(f"{UID}\n"), output
    return out / "image.tar", output


def _build_on_host(builder: Builder, tmp_path: Path, dockerfile: str) -> Path:
    from cloche.engine.options import SecretSpec, parse_output

    dest = tmp_path / "host.tar"
    builder.build(dockerfile, isolation="namespaces", files={"a.txt": "a\n"},
                  secrets=(SecretSpec(id="tok", src=str(tmp_path / "tok")),),
                  outputs=(parse_output(f"type=oci,dest={dest}"),))
    return dest


def test_nonroot_default_container_layers_equal_a_root_build(
        ready: str, builder: Builder, template_store: Path,
        tmp_path: Path) -> None:
    ctx = _context(tmp_path, DOCKERFILE)
    archive, output = _build_in_container(ready, template_store, tmp_path, ctx)
    # auto picked chroot (the user namespace is refused), said once, with this variant's line
    assert output.count("isolation=chroot: RUN steps share this container's network") == 1, \
        output
    assert output.count(f"isolation=chroot as uid {UID} (not root, no user namespace)") == 1
    inside = _oci_layers(archive)
    host = _oci_layers(_build_on_host(builder, tmp_path, DOCKERFILE))
    assert len(inside) == len(host)
    for n, (a, b) in enumerate(zip(inside, host)):
        assert a == b, f"layer {n}"
    entries = {e[0].rstrip("/"): e for layer in inside for e in layer}
    # what the comparison covers: owners other than root, set-id bits, the step's user
    assert entries["home/app/a.txt"][2:5] == (0o640, 1000, 1000)
    assert entries["srv/b.txt"][3:5] == (65534, 65534)
    assert entries["opt/tools/tool"][2:5] == (0o4755, 0, 0)
    assert entries["opt/tools/sub/g"][2] == 0o2711
    assert entries["opt/tools/owned.txt"][3:5] == (1000, 1000)
    assert entries["d"][2] == 0o2775 and entries["d/sub/x"][2] == 0o4750
    assert entries["tmp/n"][3:5] == (65534, 65534)
    assert entries["tmp/dir"][2:5] == (0o700, 65534, 65534)
    assert entries["tmp/dir/by-root"][3:5] == (0, 0)
    assert entries["work/app"][3:5] == (65534, 65534)
    assert entries["work/app/here.txt"][3:5] == (65534, 65534)
    assert "bin/.wh.true" in entries
    assert entries["ro"][2] == entries["ro/sub"][2] == 0o555 and entries["ro/f"][2] == 0o444
    assert "ro/sub/deep/a.txt" in entries and "ro/new" in entries
    assert not any("cloche" in key for key in _pax_keys(archive))  # the owner xattr: not content


def _pax_keys(archive: Path) -> set[str]:
    """Every PAX record name of the image's layers (xattrs are SCHILY.xattr.NAME)."""
    with tarfile.open(archive) as outer:
        keys = set()
        for member in outer:
            data = outer.extractfile(member) if member.isfile() else None
            if data is None or not member.name.startswith("blobs/"):
                continue
            try:
                with tarfile.open(fileobj=io.BytesIO(data.read()), mode="r:*") as tar:
                    for m in tar:
                        keys.update(m.pax_headers)
            except tarfile.TarError:
                continue  # the manifest and the config
        return keys


CHOWN_DOCKERFILE = f"""\
FROM {BASE}
RUN echo a > /a && echo b > /b && chown 1000:1000 /a && chgrp 50 /b
"""


def test_chown_in_run_is_not_kept(ready: str, builder: Builder,
                                  template_store: Path, tmp_path: Path) -> None:
    """The documented difference (docs/isolation.md): chown and chgrp in RUN succeed under
    proot's fake root but change nothing, so the files keep the step user's ids (0:0). Asked
    for with --isolation=chroot: no user namespace is tried."""
    ctx = _context(tmp_path, CHOWN_DOCKERFILE)
    archive, output = _build_in_container(ready, template_store, tmp_path, ctx,
                                          "--isolation=chroot")
    assert output.count(f"isolation=chroot as uid {UID}") == 1, output
    (inside,) = _oci_layers(archive)[1:]
    (host,) = _oci_layers(_build_on_host(builder, tmp_path, CHOWN_DOCKERFILE))[1:]
    by_name = {e[0]: e for e in inside}
    assert by_name["a"][3:5] == (0, 0) and by_name["b"][3:5] == (0, 0)
    expected = [e[:3] + ((1000, 1000) if e[0] == "a" else (0, 50) if e[0] == "b" else e[3:5])
                + e[5:] for e in inside]
    assert expected == host


def test_explicit_namespaces_as_a_user_says_what_to_do(ready: str,
                                                       tmp_path: Path) -> None:
    """--isolation=namespaces as a user where no user namespace may be made: an error whose
    hint names --isolation=chroot."""
    ctx = _context(tmp_path, f"FROM {BASE}\nRUN true\n")
    script = (f"{PY}/bin/python3 -m cloche.cli.main build --isolation=namespaces "
              "--root /tmp/store /ctx")
    result = _docker_run(ready, {str(ctx): "/ctx:ro"}, script, *USER_FLAGS)
    assert result.returncode != 0
    assert "--isolation=chroot" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


pytestmark = pytest.mark.docker
