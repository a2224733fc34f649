"""Property tests: mutated real Dockerfiles never make the front end raise anything but
DockerfileError, whether they are parsed, typed, planned or expanded step by step."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloche.dockerfile.args import StageEnv, resolve_global_scope
from cloche.dockerfile.stages import parse_dockerfile
from cloche.errors import DockerfileError
from cloche.plan import build_plan
from tests.conftest import CONFORMANCE, PROJECT_ROOT


def _corpus() -> list[str]:
    files = sorted((CONFORMANCE / "parser").glob("*/*/Dockerfile"))
    files += sorted((PROJECT_ROOT / "examples").glob("*/Dockerfile"))
    return [f.read_text(encoding="utf-8", errors="replace") for f in files]


CORPUS = _corpus()
TOKENS = ["$", "${", "}", "${X:-", "${X:?", "${X#", "${X//a/b}", '"', "'", "\\", "`", "\n",
          " \\\n", "=", "--from=", "--from=0", "--from=a", "--mount=", "type=cache,target=/x",
          "type=secret", ",", "--chown=", "--link=", "--platform=", "--interval=", "<<EOF\n",
          "<<-'EOF'\n", "EOF\n", "[", "]", '["a", "b"]', "AS ", " as x", "FROM scratch\n",
          "FROM a AS a\n", "COPY --from=a / /\n", "ARG A=1\n", "ENV A=$A\n", "ONBUILD ",
          "HEALTHCHECK ", "CMD ", "NONE", "# escape=`\n", "# syntax=x\n", "\t", "\x00", "é"]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(CORPUS))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "duplicate", "text"]))
        if action == "insert":
            text = text[:pos] + draw(st.sampled_from(TOKENS)) + text[pos:]
        elif action == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 20)):]
        elif action == "duplicate":
            lines = text.splitlines(keepends=True) or [""]
            line = draw(st.sampled_from(lines))
            text = text[:pos] + line + text[pos:]
        else:
            text = text[:pos] + draw(st.text(max_size=8)) + text[pos:]
    return text


def _exercise(text: str) -> None:
    df = parse_dockerfile(text, file="Dockerfile.fuzz")
    plan = build_plan(df)
    scope = resolve_global_scope(df, {"A": "x"})
    for stage in df.stages:
        env = StageEnv.start(scope)
        for instruction in stage.commands:
            _, env = env.apply(instruction)
    assert plan.stages


@pytest.mark.skipif(not CORPUS, reason=f"no Dockerfiles under {CONFORMANCE}")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_dockerfiles_raise_only_dockerfile_errors(text: str) -> None:
    try:
        _exercise(text)
    except DockerfileError as err:
        assert err.render()  # renders without failing


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(TOKENS + list("abc ADDCOPYRUN\n")), max_size=30))
def test_token_soup_raises_only_dockerfile_errors(tokens: list[str]) -> None:
    text = "".join(tokens)
    try:
        _exercise(text)
    except DockerfileError as err:
        assert err.render()


def test_corpus_is_real(conformance_dir: Path) -> None:
    assert len(CORPUS) > 30
