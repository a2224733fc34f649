"""Differential: the file names BuildKit (the Docker engine's) creates from expanded COPY
destinations equal the ones cloche's ARG/ENV scoping computes, for scratch-only stages
(no base image needed, so no registry)."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

from cloche.dockerfile.args import StageEnv, resolve_global_scope
from cloche.dockerfile.instructions import Copy
from cloche.dockerfile.stages import parse_dockerfile
from cloche.plan import build_plan

DOCKERFILE = textwrap.dedent("""
    ARG G=glob
    ARG DERIVED=${G}-derived
    ARG OVERRIDE=default
    FROM scratch AS first
    ARG G
    ARG DERIVED
    ENV E=env1
    COPY f /first-$G-$E-$DERIVED
    FROM first AS second
    ENV a=1 b=$a
    ENV O=env
    ARG O=arg
    ARG OVERRIDE
    ARG TARGETARCH
    COPY f /second-$a-$b-$E-${G:-noG}-$O-$OVERRIDE-$TARGETARCH
    COPY ["f", "/quoted ${E:+set} ${MISSING:-dflt}"]
    FROM second AS third
    COPY f /third-$O
    FROM scratch AS sib
    COPY f /sib-${G:-noG}-${E:-noE}-${a:-noA}
    COPY f /sibpath${PATH:+-set}
    FROM scratch AS unused
    COPY f /unused
    FROM third
    COPY --from=sib / /
""").lstrip()
BUILD_ARGS = {"OVERRIDE": "from-cli"}


def _cloche_files(text: str) -> set[str]:
    df = parse_dockerfile(text)
    plan = build_plan(df, build_args=BUILD_ARGS)
    scope = resolve_global_scope(df, BUILD_ARGS)
    finals: dict[int, StageEnv] = {}
    files = set()
    for stage in plan.stages:
        env = StageEnv.start(scope, parent=finals.get(stage.base_stage)
                             if stage.base_stage is not None else None)
        for instruction in df.stages[stage.index].commands:
            expanded, env = env.apply(instruction)
            if stage.reachable and isinstance(expanded, Copy) and expanded.sources == ("f",):
                files.add(expanded.dest.lstrip("/"))
        finals[stage.index] = env
    return files


def test_copy_destinations_match_buildkit(docker: str, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    (tmp_path / "f").write_text("x\n")
    out = tmp_path / "out"
    args = [f"--build-arg={k}={v}" for k, v in BUILD_ARGS.items()]
    result = subprocess.run(
        [docker, "build", "-q", *args, "-o", f"type=local,dest={out}", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    assert result.returncode == 0, result.stderr
    buildkit = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    expected = {"first-glob-env1-glob-derived",
                "second-1--env1-glob-arg-from-cli-" + _arch(),
                "quoted set dflt", "sib-noG-noE-noA", "third-env", "sibpath-set"}
    assert buildkit == expected
    assert _cloche_files(DOCKERFILE) == expected


def _arch() -> str:
    from cloche.dockerfile.args import host_platform

    return host_platform().split("/")[1]


REJECTED = {
    "cycle": "FROM scratch AS a\nCOPY --from=b /f /f\nFROM scratch AS b\nCOPY --from=a /f /f\n",
    "required": "FROM scratch\nCOPY f /${NOPE:?required}\n",
    "unknown-flag": "FROM scratch\nCOPY --chwon=1 f /x\n",
    "stage-name": "FROM scratch AS 1bad\nCOPY f /x\n",
    "duration": "FROM scratch\nHEALTHCHECK --interval=5 CMD x\n",
    "instruction": "FROM scratch\nCPOY f /x\n",
    "mount": "FROM scratch\nRUN --mount=type=cache,target=/c,sharing=maybe true\n",
    "copy-args": "FROM scratch\nCOPY f\n",
}


def test_both_reject_the_same_dockerfiles(docker: str, tmp_path: Path) -> None:
    import pytest

    from cloche.errors import DockerfileError

    (tmp_path / "f").write_text("x\n")
    for name, text in REJECTED.items():
        (tmp_path / "Dockerfile").write_text(text)
        result = subprocess.run([docker, "build", "-q", str(tmp_path)], capture_output=True,
                                text=True, timeout=300,
                                env={**os.environ, "DOCKER_BUILDKIT": "1"})
        assert result.returncode != 0, f"BuildKit accepted {name}"
        with pytest.raises(DockerfileError):
            build_plan(parse_dockerfile(text))
