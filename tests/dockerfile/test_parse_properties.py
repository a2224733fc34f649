"""Property tests: the parser fails only with DockerfileError, and rendering round-trips.

Inputs are arbitrary text biased towards Dockerfile syntax, and BuildKit's conformance
Dockerfiles with random edits. For every input that parses, ``to_dockerfile`` must give text
that parses to the same ``dump`` (and the same heredocs and directives).
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloche.dockerfile.dump import dump, to_dockerfile
from cloche.dockerfile.node import SyntaxTree
from cloche.dockerfile.parser import parse
from cloche.errors import DockerfileError

FRAGMENTS = [
    "FROM ", "RUN ", "COPY ", "ADD ", "ENV ", "LABEL ", "ARG ", "CMD ", "ENTRYPOINT ",
    "ONBUILD ", "HEALTHCHECK ", "SHELL ", "VOLUME ", "EXPOSE ", "USER ", "WORKDIR ",
    "MAINTAINER ", "STOPSIGNAL ", "# escape=`\n", "# syntax=x\n", "#", "\\", "`", "\n", " ",
    "\t", "\r\n", '"', "'", "[", "]", ",", "=", "--", "--from=a ", "<<", "<<-", "EOF", "\tEOF",
    "$", "${", "}", ":-", "a", "b c", "\u00a0", "\x0b", "\\\n", "`\n", '["a", "b"]', "{", "1e999",
]

dockerfile_like = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=40,
).map("".join)

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def check(text: str) -> None:
    try:
        tree = parse(text)
    except DockerfileError:
        return
    assert_round_trip(tree)


def assert_round_trip(tree: SyntaxTree) -> None:
    rendered = to_dockerfile(tree)
    again = parse(rendered)
    assert dump(again) == dump(tree), rendered
    assert [n.heredocs for n in again.nodes] == [n.heredocs for n in tree.nodes], rendered
    assert [n.json for n in again.nodes] == [n.json for n in tree.nodes], rendered
    assert again.directives.escape == tree.directives.escape
    assert [n.comments for n in again.nodes] == [n.comments for n in tree.nodes], rendered


@SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text_fails_only_with_dockerfile_error(text: str) -> None:
    check(text)


@SETTINGS
@given(dockerfile_like)
def test_dockerfile_like_text_round_trips(text: str) -> None:
    check(text)


def _conformance_files(conformance_dir: Path) -> list[str]:
    root = conformance_dir / "parser"
    return [p.read_bytes().decode("utf-8") for p in sorted(root.glob("*/*/Dockerfile"))]


edits = st.lists(
    st.tuples(st.sampled_from(["insert", "delete", "replace"]), st.floats(0, 1),
              st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3))),
    min_size=1, max_size=6,
)


def mutate(text: str, ops: list[tuple[str, float, str]]) -> str:
    for op, where, piece in ops:
        i = int(where * len(text))
        if op == "insert":
            text = text[:i] + piece + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + len(piece) + 1:]
        else:
            text = text[:i] + piece + text[i + len(piece):]
    return text


@SETTINGS
@given(data=st.data(), ops=edits)
def test_mutated_real_dockerfiles(conformance_dir: Path, data: st.DataObject, ops: list) -> None:
    files = _conformance_files(conformance_dir)
    assert len(files) >= 30
    original = data.draw(st.sampled_from(files))
    check(mutate(original, ops))


def test_every_conformance_dockerfile_round_trips(conformance_dir: Path) -> None:
    files = _conformance_files(conformance_dir)
    parsed = 0
    for text in files:
        try:
            tree = parse(text)
        except DockerfileError:
            continue
        assert_round_trip(tree)
        parsed += 1
    assert parsed >= 30
