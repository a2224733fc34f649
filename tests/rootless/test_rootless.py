"""Rootless mode (docs/rootless.md): ``cloche build`` as an ordinary user enters a user
namespace with the user's subordinate ids and builds the same image a root build makes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from cloche.oci.image import Image
from cloche.rootless.idmap import RootlessError, id_map
from cloche.store import Store
from tests.fixtures.rootfs import make_busybox_rootfs
from tests.rootless.conftest import NOSUB, SRC, AsUser

DOCKERFILE = """\
FROM base
RUN mkdir -p /data && echo hi > /data/f && chown 1000:50 /data/f && chmod 4750 /data/f \\
 && mkdir /data/d && chown 65534:65534 /data/d && ln -s f /data/link && ln /data/f /data/hard
COPY --chown=1000:1000 a.txt /app/a.txt
COPY b.txt /app/b.txt
RUN --mount=type=secret,id=s cat /run/secrets/s > /s.copy && test ! -e /run/secrets/s.keep
RUN --mount=type=cache,target=/cache echo x >> /cache/log && cp /cache/log /log
RUN --network=none sh -c 'echo offline > /net'
RUN rm -rf /home && mkdir /home && touch /home/new && rm /bin/wc
USER 1000
RUN id -u > /tmp/whoami
"""


def _context(work: Path, name: str, dockerfile: str = DOCKERFILE) -> Path:
    """A context every user can read: the Dockerfile, a.txt and b.txt (0600 on disk)."""
    ctx = work / name
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "a.txt").write_text("a\n")
    (ctx / "b.txt").write_text("b\n")
    os.chmod(ctx / "b.txt", 0o600)
    for p in (ctx, *ctx.iterdir()):
        os.chmod(p, os.stat(p).st_mode | 0o444 | (0o111 if p.is_dir() else 0))
    return ctx


def _listing(image: Image) -> list[list[tuple[object, ...]]]:
    """Each layer's entries: path, type, mode, owner, link target, size and content digest
    (not mtimes: a RUN writes the time it ran)."""
    layers = []
    for layer in image.layers:
        entries = []
        with layer.open_uncompressed() as stream, tarfile.open(fileobj=stream, mode="r|") as t:
            for m in t:
                data = t.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
                entries.append((m.name, m.type, m.mode, m.uid, m.gid, m.linkname, m.size,
                                hashlib.sha256(data).hexdigest(), m.devmajor, m.devminor,
                                tuple(sorted(m.pax_headers.items()))))
        layers.append(sorted(entries))
    return layers


def _config(image: Image) -> dict[str, object]:
    config: dict[str, object] = json.loads(image.config_bytes)
    config.pop("created", None)
    config.pop("rootfs", None)  # diff ids hash the mtimes of what RUN wrote: see _listing
    for item in config.get("history", []):  # type: ignore[attr-defined]
        item.pop("created", None)
    return config


@pytest.fixture(scope="module")
def builds(user: AsUser, workdir: Path) -> tuple[Image, Image, AsUser]:
    """The same Dockerfile built as root and as the user, each from busybox imported into
    its own store by the CLI (as root and as the user)."""
    rootfs = make_busybox_rootfs(workdir / "rootfs")
    os.chmod(workdir / "rootfs", 0o755)
    secret = workdir / "secret"
    secret.write_text("s3cret\n")
    os.chmod(secret, 0o644)
    root_store = workdir / "root-store"
    cli = [sys.executable, "-m", "cloche.cli.main"]
    env = dict(os.environ, PYTHONPATH=SRC)
    for args in (["import", "--root", str(root_store), str(rootfs), "base"],
                 ["build", "--root", str(root_store), "--secret", f"id=s,src={secret}",
                  "-t", "out", str(_context(workdir, "ctx-root"))]):
        subprocess.run(cli + args, check=True, capture_output=True, env=env, timeout=300)
    user.run("import", str(rootfs), "base")
    done = user.run("build", "--progress", "plain", "--secret", f"id=s,src={secret}",
                    "-t", "out", str(_context(workdir, "ctx-user")))
    assert "WARNING: running without root: RUN steps get no process limit" in done.stderr
    return (Store.open(root_store).image("out"), Store.open(user.store).image("out"), user)


def test_the_user_build_makes_the_root_builds_image(builds: tuple[Image, Image, AsUser]) -> None:
    as_root, as_user, _ = builds
    assert _listing(as_user) == _listing(as_root)
    assert _config(as_user) == _config(as_root)
    assert [layer.digest for layer in as_user.layers][:1] == \
        [layer.digest for layer in as_root.layers][:1]  # the imported base, byte for byte
    owners = {e[0]: (e[3], e[4], e[2]) for layer in _listing(as_user) for e in layer}
    assert owners["data/f"] == (1000, 50, 0o4750)  # chown in RUN: the image's ids, not 100999
    assert owners["data/d"][:2] == (65534, 65534)
    assert owners["app/a.txt"][:2] == (1000, 1000)  # COPY --chown
    assert owners["app/b.txt"][:2] == (0, 0)  # COPY: root, not the user who owns the file
    assert "home/.wh.app" in owners and "bin/.wh.wc" in owners  # /home made again


def test_the_store_belongs_to_the_user_and_its_subordinate_ids(
        builds: tuple[Image, Image, AsUser]) -> None:
    user = builds[2]
    assert user.store.stat().st_uid == user.uid
    assert (user.store / "index.json").stat().st_uid == user.uid
    # an image file of uid 1000 is the subordinate id 100999 on the host (inside, 1 is 100000)
    found = [p for p in (user.store).rglob("data/f") if p.is_file()]
    assert found and {p.stat().st_uid for p in found} == {100000 + 999}
    assert {p.stat().st_gid for p in found} == {100000 + 49}


def test_prune_and_du_as_the_user_reach_the_subordinate_files(
        builds: tuple[Image, Image, AsUser]) -> None:
    user = builds[2]
    user.run("prune", "-a", "-f")
    usage = json.loads(user.run("du", "--format", "json").stdout)
    assert usage["step_snapshot_bytes"] == 0
    assert not [p for p in user.store.rglob("data/f")]


def test_an_explicit_memory_limit_is_refused_clearly(user: AsUser, workdir: Path) -> None:
    ctx = workdir / "ctx-memory"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text("FROM base\nRUN true\n")
    os.chmod(ctx / "Dockerfile", 0o644)
    done = user.run("build", "--memory", "64m", str(ctx), check=False)
    assert done.returncode == 1
    assert "--memory needs the cgroup memory controller, and a build without root" in done.stderr
    assert "hint: drop the flag, or run the build as root" in done.stderr


def test_a_user_without_subordinate_ids_is_told_what_to_run(nosub: AsUser,
                                                            workdir: Path) -> None:
    ctx = workdir / "ctx-nosub"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text("FROM base\nRUN true\n")
    os.chmod(ctx / "Dockerfile", 0o644)
    done = nosub.run("build", str(ctx), check=False)
    assert done.returncode == 1, done.stderr
    assert f"building as {NOSUB} (uid {nosub.uid}) needs subordinate uids, and /etc/subuid " \
           "has none for this user" in done.stderr
    assert f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {NOSUB}" \
        in done.stderr
    assert "Traceback" not in done.stderr


def test_the_library_enters_the_namespace_when_asked(builds: tuple[Image, Image, AsUser],
                                                     workdir: Path) -> None:
    """cloche.build() as a user fails with what to do; after cloche.rootless.enter() it
    builds (docs/rootless.md)."""
    user = builds[2]
    program = (
        "import sys, cloche, cloche.rootless\n"
        "try:\n"
        "    cloche.build(sys.argv[1], tags=['lib'])\n"
        "except cloche.errors.SandboxError as e:\n"
        "    print('refused:', e.hint)\n"
        "cloche.rootless.enter()\n"
        "print('built', cloche.build(sys.argv[1], tags=['lib']).digest)\n")
    ctx = workdir / "ctx-lib"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text("FROM out\nUSER root\nRUN --network=none touch /lib-made\n")
    os.chmod(ctx / "Dockerfile", 0o644)
    script = workdir / "lib.py"
    script.write_text(program)
    os.chmod(script, 0o644)
    argv = [user.argv[0], str(script), str(ctx)]
    cmd = ["runuser", "-u", user.user, "--", "env", "-i",
           *(f"{k}={v}" for k, v in user.env.items()), *argv]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "refused: call cloche.rootless.enter() first thing" in done.stdout
    assert "built sha256:" in done.stdout


def test_the_namespace_variable_alone_does_not_make_root_a_user() -> None:
    """$CLOCHE_ROOTLESS counts only inside a namespace whose uid 0 is that user."""
    code = "from cloche.store.root import default_root; print(default_root())"
    env = {k: v for k, v in os.environ.items() if k not in ("CLOCHE_ROOT", "XDG_DATA_HOME")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(env, CLOCHE_ROOTLESS="1000:1000", PYTHONPATH=SRC), check=True)
    expected = "/var/lib/cloche" if os.geteuid() == 0 else ""
    assert done.stdout.strip() == expected or os.geteuid() != 0
    # the host's root naming itself: its uid map is the identity, no user namespace at all
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(env, CLOCHE_ROOTLESS="0:0", PYTHONPATH=SRC), check=True)
    assert done.stdout.strip() == expected or os.geteuid() != 0


def test_subordinate_ranges_make_the_maps(tmp_path: Path) -> None:
    sub = tmp_path / "subuid"
    sub.write_text("alice:100000:65536\nbob:200000:10\n1001:300000:100\nbob:400000:70000\n")
    assert id_map(str(sub), "alice", 1000, "uid").lines == ((0, 1000, 1), (1, 100000, 65536))
    assert id_map(str(sub), "bob", 1002, "uid").lines == (
        (0, 1002, 1), (1, 200000, 10), (11, 400000, 70000))
    with pytest.raises(RootlessError, match="gives carol 100 subordinate uids; an image's "
                       "files need 65535") as err:
        id_map(str(sub), "carol", 1001, "uid")  # by number
    assert "usermod --add-subuids 100000-165535 --add-subgids 100000-165535 carol" in \
        str(err.value.hint)
    with pytest.raises(RootlessError, match="has none for this user"):
        id_map(str(sub), "dave", 1003, "gid")


def test_a_local_output_belongs_to_the_user(builds: tuple[Image, Image, AsUser],
                                            workdir: Path) -> None:
    """-o type=local as a user writes the user's own files (as rootless BuildKit's client
    does), not files of subordinate ids the user could not remove."""
    user = builds[2]
    out = workdir / "local-out"
    out.mkdir(exist_ok=True)
    os.chown(out, user.uid, -1)
    user.run("build", "--secret", f"id=s,src={workdir / 'secret'}", "-o",
             f"type=local,dest={out / 'fs'}", str(workdir / "ctx-user"))
    owners = {p.lstat().st_uid for p in (out / "fs").rglob("*")}
    assert owners == {user.uid}
    assert (out / "fs" / "data" / "f").read_text() == "hi\n"
    subprocess.run(["runuser", "-u", user.user, "--", "rm", "-rf", str(out / "fs")], check=True)
