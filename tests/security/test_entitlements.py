"""Issue 9, item 1: entitlements. ``RUN --security=insecure`` and ``--network=host`` are
privileges the caller grants (``--allow security.insecure``, ``--allow network.host``), never
the Dockerfile or a base image's ONBUILD trigger.

The attacks run for real: a refused step must not run at all, which a cache mount (a folder
of the store, on the host) proves by staying empty.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from cloche.errors import ClocheError, ConfigError, DockerfileError
from tests.engine.conftest import BASE, Builder, rootfs


def _markers(root: Path, name: str) -> list[Path]:
    """Every file called ``name`` in the store (cache mounts live there)."""
    return [p for p in root.rglob(name)]


def _insecure_line(marker: str) -> str:
    return (f"RUN --security=insecure --mount=type=cache,target=/c,id=ent "
            f"touch /c/{marker} && grep CapBnd /proc/self/status > /caps\n")


def test_insecure_run_is_refused_without_allow(builder: Builder) -> None:
    marker = f"ran-{uuid.uuid4().hex}"
    with pytest.raises(DockerfileError) as info:
        builder.build(f"FROM {BASE}\n" + _insecure_line(marker))
    err = info.value
    assert err.line == 2 and err.file == "Dockerfile"
    assert err.source_line is not None
    assert err.column == err.source_line.index("--security=insecure") + 1
    text = err.render()
    assert "--allow security.insecure" in text
    assert "^" in text.splitlines()[2]  # the caret under the flag
    assert _markers(builder.root, marker) == []


def test_insecure_run_runs_with_allow(builder: Builder, tmp_path: Path) -> None:
    marker = f"ran-{uuid.uuid4().hex}"
    result = builder.build(f"FROM {BASE}\n" + _insecure_line(marker),
                           allow=("security.insecure",))
    caps = (rootfs(result.image, tmp_path / "out") / "caps").read_text()
    assert caps.split()[1] == _host_bounding_set()
    assert len(_markers(builder.root, marker)) == 1


def test_a_cached_insecure_step_is_refused_without_allow(builder: Builder) -> None:
    """The check is not a property of running the step: a cache hit is refused too."""
    dockerfile = f"FROM {BASE}\nRUN --security=insecure echo hi > /x\n"
    builder.build(dockerfile, allow=("security.insecure",))
    with pytest.raises(DockerfileError, match="security.insecure"):
        builder.build(dockerfile)


def test_onbuild_insecure_trigger_of_a_base_image_is_refused(builder: Builder,
                                                             tmp_path: Path) -> None:
    marker = f"ran-{uuid.uuid4().hex}"
    builder.build(f"FROM {BASE}\nONBUILD " + _insecure_line(marker), tags=("evil-base:1",))
    assert _markers(builder.root, marker) == []  # ONBUILD does not run in its own build
    with pytest.raises(DockerfileError) as info:
        builder.build("FROM evil-base:1\n")
    err = info.value
    assert err.line == 1 and err.file == "Dockerfile" and err.column == 1
    assert "ONBUILD" in err.message and "security.insecure" in err.render()
    assert "--allow security.insecure" in err.render()
    assert _markers(builder.root, marker) == []
    result = builder.build("FROM evil-base:1\n", allow=("security.insecure",))
    assert len(_markers(builder.root, marker)) == 1
    caps = (rootfs(result.image, tmp_path / "out") / "caps").read_text()
    assert caps.split()[1] == _host_bounding_set()


def test_onbuild_insecure_trigger_of_a_parent_stage_is_refused(builder: Builder) -> None:
    dockerfile = (f"FROM {BASE} AS parent\nONBUILD RUN --security=insecure true\n"
                  "FROM parent\nRUN true\n")
    with pytest.raises(DockerfileError, match="security.insecure") as info:
        builder.build(dockerfile)
    assert info.value.line == 3


def test_run_network_host_is_refused_without_allow(builder: Builder) -> None:
    with pytest.raises(DockerfileError) as info:
        builder.build(f"FROM {BASE}\nRUN true\nRUN --network=host readlink /proc/self/ns/net\n")
    err = info.value
    assert err.line == 3 and err.source_line is not None
    assert err.column == err.source_line.index("--network=host") + 1
    assert "--allow network.host" in err.render()


def test_run_network_host_runs_with_allow(builder: Builder, tmp_path: Path) -> None:
    result = builder.build(f"FROM {BASE}\nRUN --network=host readlink /proc/self/ns/net > /ns\n",
                           allow=("network.host",))
    seen = (rootfs(result.image, tmp_path / "out") / "ns").read_text().strip()
    assert seen == os.readlink("/proc/self/ns/net")


def test_build_network_host_needs_allow(builder: Builder, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--allow network.host"):
        builder.build(f"FROM {BASE}\nRUN true\n", network="host")
    result = builder.build(f"FROM {BASE}\nRUN readlink /proc/self/ns/net > /ns\n",
                           network="host", allow=("network.host",))
    seen = (rootfs(result.image, tmp_path / "out") / "ns").read_text().strip()
    assert seen == os.readlink("/proc/self/ns/net")


def test_unknown_entitlement_is_a_config_error(builder: Builder) -> None:
    with pytest.raises(ConfigError, match="--allow") as info:
        builder.build(f"FROM {BASE}\nRUN true\n", allow=("security.insecur",))
    assert "security.insecure" in str(info.value.hint) + info.value.message


def test_the_library_face_takes_allow(builder: Builder) -> None:
    import cloche

    ctx = builder.context(f"FROM {BASE}\nRUN --security=insecure true\n")
    with pytest.raises(ClocheError, match="security.insecure"):
        cloche.build(str(ctx), root=builder.root)
    cloche.build(str(ctx), root=builder.root, allow=["security.insecure"])


def test_cli_refuses_and_names_the_flag(builder: Builder) -> None:
    ctx = builder.context(f"FROM {BASE}\nRUN --security=insecure true\n")
    refused = builder.cli("build", "--progress", "plain", str(ctx), check=False)
    assert refused.returncode != 0
    assert "Dockerfile:2" in refused.stderr and "--allow security.insecure" in refused.stderr
    assert "^" in refused.stderr
    builder.cli("build", "--progress", "plain", "--allow", "security.insecure", str(ctx))
    refused = builder.cli("build", "--network", "host", str(ctx), "--allow",
                          "security.insecure", check=False)
    assert refused.returncode != 0 and "--allow network.host" in refused.stderr
    builder.cli("build", "--network", "host", "--allow", "network.host", "--allow",
                "security.insecure", str(ctx))


def _host_bounding_set() -> str:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return line.split()[1]
    raise AssertionError("no CapBnd")
