"""The engine runs the plan's resolved steps: a ``--from`` is the stage the plan resolved,
whatever the base image's ENV says at dispatch time, and a base image's ONBUILD triggers go
through the front end's checks, their errors located at the FROM line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cloche.dockerfile.stages import parse_dockerfile
from cloche.errors import DockerfileError
from cloche.oci.image import Image
from cloche.plan import build_plan
from cloche.plan.steps import StageRef
from tests.engine.conftest import BASE, Builder, rootfs


def _with_config(builder: Builder, name: str, **changes: object) -> None:
    """Store ``BASE`` again as ``name`` with its config changed (what a registry may serve)."""
    store = builder.store
    image = store.image(BASE)
    store.put_image(Image.from_config(image.config.replace(**changes), image.layers), [name])


def test_copy_from_with_an_arg_uses_the_stage_the_plan_resolved(builder: Builder,
                                                                tmp_path: Path) -> None:
    # ``ARG SRC`` without a value leaves SRC unset in the plan; at dispatch time the base
    # image's ENV SRC=two is visible. The reference is resolved once, by the plan.
    _with_config(builder, "env-src:1", env=("PATH=/bin", "SRC=two"))
    dockerfile = textwrap.dedent(f"""\
        FROM {BASE} AS one
        RUN echo one > /f
        FROM {BASE} AS two
        RUN echo two > /f
        FROM env-src:1
        ARG SRC
        COPY --from=two /f /two
        COPY --from=${{SRC:-one}} /f /f
        RUN --mount=from=${{SRC:-one}},target=/m cat /m/f > /mounted
    """)
    plan = build_plan(parse_dockerfile(dockerfile))
    steps = plan.stages[2].steps
    assert steps[2].from_ == StageRef(0, "one") and steps[3].mounts == (StageRef(0, "one"),)
    copies = [(d.kind, d.stage) for d in plan.stages[2].dependencies]
    assert copies == [("copy", 1), ("copy", 0), ("mount", 0)]
    root = rootfs(builder.build(dockerfile).image, tmp_path / "out")
    assert (root / "f").read_text() == "one\n"
    assert (root / "mounted").read_text() == "one\n"
    assert (root / "two").read_text() == "two\n"


@pytest.mark.parametrize("trigger, message", [
    ("ONBUILD RUN x", "ONBUILD isn't allowed as an ONBUILD trigger"),
    ("FROM y", "FROM isn't allowed as an ONBUILD trigger"),
    ("COPY --bogus a b", "unknown flag"),
])
def test_image_triggers_get_the_front_end_checks(builder: Builder, trigger: str,
                                                 message: str) -> None:
    _with_config(builder, "bad-trigger:1", on_build=("RUN true", trigger))
    with pytest.raises(DockerfileError, match=message) as info:
        builder.build("# a comment\nFROM bad-trigger:1\nRUN true\n")
    assert info.value.line == 2 and info.value.source_line == "FROM bad-trigger:1"
    assert "of the base image" in info.value.message


def test_image_trigger_copies_from_a_stage_of_the_build(builder: Builder,
                                                        tmp_path: Path) -> None:
    _with_config(builder, "copy-trigger:1", on_build=("COPY --from=assets /a /from-assets",))
    dockerfile = (f"FROM {BASE} AS assets\nRUN echo a > /a\n"
                  "FROM copy-trigger:1\nCOPY --from=assets /a /direct\n")
    root = rootfs(builder.build(dockerfile).image, tmp_path / "out")
    assert (root / "from-assets").read_text() == "a\n" == (root / "direct").read_text()
