"""What FROM carries over: a previous stage's config, and ONBUILD triggers of a stored image
(run once, right after the FROM that uses it, and not a second generation down)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloche.errors import BuildError
from tests.engine.conftest import BASE, Builder, rootfs

PARENT = (f"FROM {BASE} AS parent\n"
          "ENV A=1 B=two\n"
          "USER app\n"
          "WORKDIR /srv\n"
          'ENTRYPOINT ["/bin/sh", "-c"]\n'
          'CMD ["echo parent"]\n'
          "LABEL org.example.who=parent keep=yes\n"
          "EXPOSE 8080\n"
          "STOPSIGNAL SIGTERM\n")


def test_from_a_stage_inherits_its_config(builder: Builder, tmp_path: Path) -> None:
    dockerfile = PARENT + ("FROM parent\n"
                           "ENV B=three\n"
                           "LABEL org.example.who=child\n"
                           "RUN echo \"$A $B $(id -u) $(pwd)\" > /tmp/seen\n")
    result = builder.build(dockerfile)
    config = result.image.config
    assert config.user == "app"
    assert config.working_dir == "/srv"
    assert config.entrypoint == ("/bin/sh", "-c")
    assert config.cmd == ("echo parent",)
    assert dict(config.labels) == {"org.example.who": "child", "keep": "yes"}
    assert "A=1" in config.env and "B=three" in config.env and "B=two" not in config.env
    assert config.exposed_ports == ("8080/tcp",)
    assert config.stop_signal == "SIGTERM"
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "tmp/seen").read_text() == "1 three 1000 /srv\n"
    # the parent's history comes along, then the child's own entries
    created = [h.created_by for h in config.history]
    assert created[-1].startswith("RUN ") and "ENV A=1 B=two" in created


def test_entrypoint_in_child_resets_inherited_cmd(builder: Builder) -> None:
    result = builder.build(PARENT + 'FROM parent\nENTRYPOINT ["/bin/true"]\n')
    assert result.image.config.entrypoint == ("/bin/true",)
    assert result.image.config.cmd is None


def _onbuild_parent(builder: Builder) -> None:
    builder.build(f"FROM {BASE}\n"
                  "ONBUILD RUN echo run >> /runs\n"
                  "ONBUILD COPY from-child.txt /from-child.txt\n"
                  "ENV MARK=parent\n",
                  tags=("onbuild-parent:1",))


def test_onbuild_runs_in_the_next_build_only(builder: Builder, tmp_path: Path) -> None:
    _onbuild_parent(builder)
    parent = builder.store.image("onbuild-parent:1")
    assert parent.config.on_build == ("RUN echo run >> /runs",
                                      "COPY from-child.txt /from-child.txt")
    assert len(parent.layers) == 1  # ONBUILD itself runs nothing

    child = builder.build("FROM onbuild-parent:1\nRUN echo child > /child\n",
                          {"from-child.txt": "child context"}, tags=("onbuild-child:1",))
    root = rootfs(child.image, tmp_path / "child")
    assert (root / "runs").read_text() == "run\n"
    assert (root / "from-child.txt").read_text() == "child context"
    assert not child.image.config.on_build  # triggers are not inherited further

    grandchild = builder.build("FROM onbuild-child:1\nRUN echo grand > /grand\n",
                               {"from-child.txt": "grandchild context"})
    root = rootfs(grandchild.image, tmp_path / "grandchild")
    assert (root / "runs").read_text() == "run\n"  # not run a second time
    assert (root / "from-child.txt").read_text() == "child context"


def test_onbuild_of_a_stage_runs_in_a_stage_built_from_it(builder: Builder,
                                                          tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE} AS base\nONBUILD RUN echo triggered > /triggered\n"
                  "RUN test ! -e /triggered\n"
                  "FROM base\nRUN cat /triggered > /seen\n")
    result = builder.build(dockerfile)
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "seen").read_text() == "triggered\n"
    assert not result.image.config.on_build


def test_failing_onbuild_trigger_names_the_from_line(builder: Builder) -> None:
    builder.build(f"FROM {BASE}\nONBUILD RUN exit 4\n", tags=("onbuild-bad:1",))
    with pytest.raises(BuildError) as info:
        builder.build("# a comment\n\nFROM onbuild-bad:1\nRUN true\n")
    assert info.value.line == 3 and info.value.exit_status == 4
