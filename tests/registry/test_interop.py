"""Interop with real clients: Docker and skopeo read what cloche pushes; cloche pulls what they
push, and the result flattens to the same files; the CLI commands end to end."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from cloche.layers.apply import flatten
from cloche.oci.reference import Reference
from cloche.store import Store
from tests.fixtures.services import Registry, require_tool

pytestmark = pytest.mark.registry


def cloche(*args: str, env: dict[str, str] | None = None, input: str | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "cloche.cli.main", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, input=input, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"cloche {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc


def tree(root: Path) -> dict[str, tuple[str, str | bytes]]:
    """Every path under root (but /proc, /sys, /dev) with its kind and content or target."""
    out: dict[str, tuple[str, str | bytes]] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.split("/", 1)[0] in ("proc", "sys", "dev"):
            continue
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir", "")
        else:
            out[rel] = ("file", path.read_bytes())
    return out


def flatten_stored(store: Store, name: str, dest: Path) -> dict[str, tuple[str, str | bytes]]:
    image = store.image(name)
    streams = [layer.open() for layer in image.layers]
    try:
        flatten(streams, dest)
    finally:
        for s in streams:
            s.close()
    return tree(dest)


@pytest.fixture(scope="module")
def pushed_busybox(registry: Registry, busybox_rootfs: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The busybox rootfs imported into a store by cloche and pushed by cloche."""
    root = tmp_path_factory.mktemp("store")
    name = f"{registry.host}/interop/busybox:1"
    cloche("import", str(busybox_rootfs), name, "--root", str(root), "-c", 'CMD ["/bin/sh"]')
    out = cloche("push", name, "--root", str(root))
    assert "digest: sha256:" in out.stdout and "Pushed" in out.stderr
    # one line per layer, as Docker prints them: the config blob is no layer
    assert [line for line in out.stderr.splitlines() if line.endswith(": Pushed")] == \
        [f"{Store.open(root).image(name).layers[0].digest.short}: Pushed"]
    again = cloche("push", name, "--root", str(root))
    assert "Layer already exists" in again.stderr
    pulled = cloche("pull", name, "--root", str(tmp_path_factory.mktemp("store2")))
    assert [line for line in pulled.stderr.splitlines() if line.endswith(": Pull complete")] \
        == [f"{Store.open(root).image(name).layers[0].digest.short}: Pull complete"]
    return name, root


@pytest.mark.docker
def test_docker_pulls_and_runs_what_cloche_pushed(pushed_busybox: tuple[str, Path], docker: str,
                                                 registry: Registry, busybox_rootfs: Path,
                                                 tmp_path: Path) -> None:
    name, _ = pushed_busybox
    subprocess.run([docker, "pull", name], check=True, capture_output=True, timeout=120)
    try:
        run = subprocess.run([docker, "run", "--rm", "--network", "none", name, "/bin/cat",
                              "/etc/group"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert run.stdout == (busybox_rootfs / "etc" / "group").read_text()
        # and the other way: docker pushes, cloche pulls, the files are the same
        theirs = f"{registry.host}/interop/from-docker:1"
        subprocess.run([docker, "tag", name, theirs], check=True, timeout=60)
        subprocess.run([docker, "push", theirs], check=True, capture_output=True, timeout=120)
        subprocess.run([docker, "rmi", theirs], capture_output=True, timeout=60)
        store = Store.open(tmp_path / "store")
        cloche("pull", theirs, "--root", str(store.root))
        assert flatten_stored(store, theirs, tmp_path / "rootfs") == tree(busybox_rootfs)
    finally:
        subprocess.run([docker, "rmi", "-f", name], capture_output=True, timeout=60)


def test_skopeo_copies_what_cloche_pushed(pushed_busybox: tuple[str, Path], tmp_path: Path) -> None:
    skopeo = require_tool("skopeo", "apt-get install skopeo")
    name, root = pushed_busybox
    layout = tmp_path / "layout"
    subprocess.run([skopeo, "copy", "--src-tls-verify=false", f"docker://{name}",
                    f"oci:{layout}:copy"], check=True, capture_output=True, timeout=120)
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    stored = Store.open(root).resolve(name)
    assert manifest_digest == str(stored.digest)    # same manifest bytes, not a conversion
    inspect = subprocess.run([skopeo, "inspect", "--tls-verify=false", f"docker://{name}"],
                             check=True, capture_output=True, text=True, timeout=60)
    assert json.loads(inspect.stdout)["Digest"] == str(stored.digest)


def test_cloche_pulls_what_skopeo_pushed(registry: Registry, busybox_rootfs: Path,
                                         tmp_path: Path) -> None:
    skopeo = require_tool("skopeo", "apt-get install skopeo")
    umoci = require_tool("umoci", "apt-get install umoci")
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(busybox_rootfs.rglob("*")):
            rel = path.relative_to(busybox_rootfs).as_posix()
            if rel.split("/", 1)[0] not in ("proc", "sys", "dev"):
                tar.add(path, arcname=rel, recursive=False)
    layout = tmp_path / "oci"
    subprocess.run([umoci, "init", "--layout", str(layout)], check=True, timeout=60)
    subprocess.run([umoci, "new", "--image", f"{layout}:t"], check=True, timeout=60)
    subprocess.run([umoci, "raw", "add-layer", "--image", f"{layout}:t", str(layer)], check=True,
                   timeout=60)
    name = f"{registry.host}/interop/from-skopeo:2"
    subprocess.run([skopeo, "copy", "--dest-tls-verify=false", f"oci:{layout}:t",
                    f"docker://{name}"], check=True, capture_output=True, timeout=120)
    store = Store.open(tmp_path / "store")
    out = cloche("pull", name, "--root", str(store.root))
    assert out.stdout.strip() == str(Reference.parse(name))
    assert flatten_stored(store, name, tmp_path / "rootfs") == tree(busybox_rootfs)
    # by digest: stored unnamed, found by digest
    digest = store.resolve(name).digest
    other = Store.open(tmp_path / "store2")
    cloche("pull", f"{registry.host}/interop/from-skopeo@{digest}", "--root", str(other.root))
    assert other.resolve(f"{registry.host}/interop/from-skopeo@{digest}").digest == digest


def test_login_push_pull_logout(auth_registry: Registry, busybox_rootfs: Path,
                                tmp_path: Path) -> None:
    env = {"DOCKER_CONFIG": str(tmp_path / "docker"), "CLOCHE_CONFIG": str(tmp_path / "none")}
    host = auth_registry.host
    root = str(tmp_path / "store")
    name = f"{host}/private/busybox:1"
    cloche("import", str(busybox_rootfs), name, "--root", root, env=env)
    denied = cloche("push", name, "--root", root, env=env, check=False)
    assert denied.returncode != 0 and "Traceback" not in denied.stderr
    assert "401" in denied.stderr and f"cloche login {host}" in denied.stderr
    wrong = cloche("login", "-u", "tester", "--password-stdin", host, env=env, input="nope\n",
                   check=False)
    assert wrong.returncode != 0 and "login to" in wrong.stderr and "failed" in wrong.stderr
    assert not (tmp_path / "docker" / "config.json").exists()     # nothing saved
    ok = cloche("login", "-u", "tester", "--password-stdin", host, env=env,
                input=f"{auth_registry.password}\n")
    assert "Login Succeeded" in ok.stdout
    saved = json.loads((tmp_path / "docker" / "config.json").read_text())
    assert base64.b64decode(saved["auths"][host]["auth"]).decode() == \
        f"tester:{auth_registry.password}"
    cloche("push", name, "--root", root, env=env)
    cloche("pull", name, "--root", str(tmp_path / "store2"), env=env)
    out = cloche("logout", host, env=env)
    assert f"Removing login credentials for {host}" in out.stdout
    assert host not in json.loads((tmp_path / "docker" / "config.json").read_text())["auths"]
    assert cloche("pull", name, "--root", str(tmp_path / "store3"), env=env,
                  check=False).returncode != 0
