"""cloche's images equal BuildKit's (Docker engine) for Dockerfiles covering the semantics.

See harness.py for what is compared and why umoci does the unpacking for both sides.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.differential import harness
from tests.fixtures.services import require_root, require_tool

CLOCHE = [sys.executable, "-m", "cloche.cli.main"]


@pytest.fixture(scope="module")
def base_image(registry, docker, busybox_rootfs, tmp_path_factory) -> str:
    """busybox-static imported into the engine and pushed to the loopback registry."""
    require_tool("skopeo")
    require_tool("umoci")
    ref = f"{registry.host}/differential/busybox:1"
    tar = tmp_path_factory.mktemp("base") / "rootfs.tar"
    harness.run(["tar", "-C", str(busybox_rootfs), "--numeric-owner", "-cf", str(tar), "."])
    harness.run([docker, "import", str(tar), ref])
    harness.run([docker, "push", ref])
    return ref


def build_with_docker(docker: str, case: harness.Case, base: str, out: Path) -> str:
    tag = f"cloche-differential/{case.name}:latest"
    cmd = [docker, "build", "--no-cache", "-q", "-t", tag, "--build-arg", f"BASE={base}"]
    for key, value in case.build_args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    if case.target:
        cmd += ["--target", case.target]
    harness.run(cmd + [str(case.path)], env={"DOCKER_BUILDKIT": "1", "PATH": "/usr/bin:/bin"})
    harness.run([docker, "save", "-o", str(out), tag])
    return f"docker-archive:{out}"


def build_with_cloche(case: harness.Case, base: str, out: Path, store: Path) -> str:
    cmd = CLOCHE + ["build", "--root", str(store), "--progress", "plain",
                    "--build-arg", f"BASE={base}", "-o", f"type=oci,dest={out}"]
    for key, value in case.build_args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    if case.target:
        cmd += ["--target", case.target]
    harness.run(cmd + [str(case.path)])
    return f"oci-archive:{out}"


@pytest.mark.parametrize("case", harness.cases(), ids=lambda c: c.name)
def test_same_image_as_buildkit(case, base_image, docker, tmp_path) -> None:
    require_root()
    theirs_ref = build_with_docker(docker, case, base_image, tmp_path / "docker.tar")
    ours_ref = build_with_cloche(case, base_image, tmp_path / "oci.tar", tmp_path / "store")
    (tmp_path / "t").mkdir()
    (tmp_path / "o").mkdir()
    their_tree, their_config = harness.unpack(theirs_ref, tmp_path / "t", id_lines=True)
    their_tree = harness.as_current_buildkit(their_tree, case.current_buildkit)
    their_tree = harness.as_current_buildkit_owners(their_tree, case.current_buildkit_owners)
    our_tree, our_config = harness.unpack(ours_ref, tmp_path / "o")

    problems = harness.diff_trees(our_tree, their_tree)
    assert not problems, "root filesystems differ:\n" + "\n".join(problems)
    assert harness.normal_config(our_config) == harness.normal_config(their_config)
    # The base image has one history entry (docker import); everything after it is the build's.
    assert harness.normal_history(our_config, 1) == harness.normal_history(their_config, 1)
    assert len(our_config["rootfs"]["diff_ids"]) == len(their_config["rootfs"]["diff_ids"])
