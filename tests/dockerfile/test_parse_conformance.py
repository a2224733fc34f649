"""BuildKit's own parser test data: every case parses to its ``result``; negatives fail.

The cases are listed from ../shared/conformance/buildkit at collection time (so each one is
its own test id) and read at test time through the ``conformance_dir`` fixture.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cloche.dockerfile.dump import dump
from cloche.dockerfile.parser import parse
from cloche.errors import DockerfileError
from tests.conftest import CONFORMANCE

PARSER = Path("parser")


def _cases(folder: str) -> list[str]:
    root = CONFORMANCE / PARSER / folder
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


@pytest.mark.parametrize("case", _cases("testfiles"))
def test_parses_to_buildkit_result(conformance_dir: Path, case: str) -> None:
    folder = conformance_dir / PARSER / "testfiles" / case
    tree = parse(_read(folder / "Dockerfile"), file=f"{case}/Dockerfile")
    assert dump(tree) == _read(folder / "result")


@pytest.mark.parametrize("case", _cases("testfiles-negative"))
def test_negative_case_is_rejected(conformance_dir: Path, case: str) -> None:
    folder = conformance_dir / PARSER / "testfiles-negative" / case
    with pytest.raises(DockerfileError) as info:
        parse(_read(folder / "Dockerfile"), file=f"{case}/Dockerfile")
    assert info.value.file == f"{case}/Dockerfile"
    assert info.value.render().startswith(f"error: {case}/Dockerfile")


def test_every_case_folder_was_collected(conformance_dir: Path) -> None:
    """Guards against an empty parametrization passing silently."""
    assert len(_cases("testfiles")) >= 30
    assert len(_cases("testfiles-negative")) >= 4
