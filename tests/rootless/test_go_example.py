"""Issue 10's proof, root and user: the multi-stage Go example (examples/go-hello, its bases
pulled from the loopback registry) builds to the same image as root and as an ordinary user
with subordinate ids; the user's rebuild runs nothing (the build cache), and the user pushes
the result to a registry that wants credentials, read from the user's own
~/.docker/config.json. (The third way, cloche's own image in `docker run`, is
tests/image/test_modes.py.)"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cloche.store import Store
from tests.fixtures.golang import GO_HELLO, GoBaseImages
from tests.fixtures.services import Registry
from tests.rootless.conftest import AsUser
from tests.rootless.test_rootless import _config, _listing

pytestmark = [pytest.mark.root, pytest.mark.registry, pytest.mark.timeout(3600)]


def _context(workdir: Path) -> Path:
    """A copy of the example every user can read."""
    ctx = workdir / "go-hello"
    if not ctx.exists():
        shutil.copytree(GO_HELLO, ctx)
        for folder, _dirs, files in os.walk(ctx):
            os.chmod(folder, 0o755)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o644)
    return ctx


def _docker_config(user: AsUser, registry: Registry) -> None:
    auth = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    folder = user.home / ".docker"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    for path in (folder, folder / "config.json"):
        os.chown(path, user.uid, -1)
    os.chmod(folder / "config.json", 0o600)


def test_the_go_example_as_root_and_as_a_user(go_base_images: GoBaseImages, user: AsUser,
                                              workdir: Path, auth_registry: Registry) -> None:
    ctx = _context(workdir)
    root_store = workdir / "go-root-store"
    cli = [sys.executable, "-m", "cloche.cli.main"]
    subprocess.run(cli + ["build", "--root", str(root_store), *go_base_images.build_args,
                          "-t", "go-hello:root", str(ctx)],
                   check=True, capture_output=True, timeout=1800)
    first = user.run("build", "--progress", "plain", *go_base_images.build_args,
                     "-t", "go-hello:user", str(ctx), timeout=1800)
    assert "go build" in first.stderr + first.stdout

    as_root = Store.open(root_store).image("go-hello:root")
    as_user = Store.open(user.store).image("go-hello:user")
    assert _listing(as_user) == _listing(as_root)
    assert _config(as_user) == _config(as_root)
    assert as_user.config.user == "nonroot"

    # the user's rebuild: every step from the cache, nothing runs
    again = user.run("build", "--progress", "plain", *go_base_images.build_args,
                     "-t", "go-hello:user", str(ctx), timeout=600)
    log = again.stderr + again.stdout
    assert "CACHED" in log and "go version" not in log.replace("RUN go version", ""), log
    assert Store.open(user.store).image("go-hello:user").digest == as_user.digest

    # a push with the user's credentials (the registry refuses anonymous pushes)
    target = f"{auth_registry.host}/rootless/go-hello:1"
    anonymous = user.run("push", "go-hello:user", target, check=False)
    assert anonymous.returncode != 0
    _docker_config(user, auth_registry)
    user.run("push", "go-hello:user", target)
    inspect = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw",
         "--creds", f"{auth_registry.username}:{auth_registry.password}", f"docker://{target}"],
        check=True, capture_output=True, text=True, timeout=120)
    pushed = json.loads(inspect.stdout)
    assert [layer["size"] > 0 for layer in pushed["layers"]]
    assert pushed["config"]["digest"] == str(as_user.config_digest)
