"""BuildKit's own shell-expansion tables (envVarTest, wordsTest), run line by line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloche.dockerfile.shell import ShellExpansionError, expand_word, expand_words
from tests.conftest import CONFORMANCE

SHELL_DIR = CONFORMANCE / "shell"
ENV_VAR_ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


def _env_var_cases() -> list:
    path = SHELL_DIR / "envVarTest"
    if not path.is_file():
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=f"{path} not found"))]
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        platform, source, expected = line.split("|", 2)
        if platform.strip() not in ("A", "U"):
            continue  # W: Windows-only expectations
        cases.append(pytest.param(source.strip(), expected.strip(), id=f"L{number}"))
    return cases


def _words_cases() -> list:
    path = SHELL_DIR / "wordsTest"
    if not path.is_file():
        return [pytest.param(None, None, None, marks=pytest.mark.skip(reason=f"{path} not found"))]
    cases = []
    env: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("ENV "):
            name, value = line[4:].split("=", 1)
            env[name] = value
            continue
        source, expected = line.split(" | ", 1)
        cases.append(pytest.param(source, expected, dict(env), id=f"L{number}"))
    return cases


@pytest.mark.parametrize(("source", "expected"), _env_var_cases())
def test_env_var_table(conformance_dir: Path, source: str, expected: str) -> None:
    if expected == "error":
        with pytest.raises(ShellExpansionError):
            expand_word(source, ENV_VAR_ENV)
    else:
        assert expand_word(source, ENV_VAR_ENV) == expected


@pytest.mark.parametrize(("source", "expected", "env"), _words_cases())
def test_words_table(conformance_dir: Path, source: str, expected: str, env: dict) -> None:
    if expected == "error":
        with pytest.raises(ShellExpansionError):
            expand_words(source, env)
    else:
        assert expand_words(source, env) == expected.split(",")


def test_tables_are_not_empty(conformance_dir: Path) -> None:
    assert len(_env_var_cases()) > 200 and len(_words_cases()) > 20
