"""``cloche plan`` on the examples: the reachable set for --target, formats, error rendering."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cloche.cli.main import cli
from tests.conftest import PROJECT_ROOT

NINE = PROJECT_ROOT / "examples" / "nine-stages"
MULTI = PROJECT_ROOT / "examples" / "multistage"


def run(*args: str, stdin: str | None = None):
    return CliRunner().invoke(cli, ["plan", *args], input=stdin)


def _section(text: str, title: str) -> str:
    return text.split(title, 1)[1].split("\n\n", 1)[0]


@pytest.mark.parametrize(("target", "built", "skipped"), [
    ("release", {"base", "toolchain", "deps", "build", "release"},
     {"lint", "test", "docs", "debug"}),
    ("debug", {"base", "toolchain", "deps", "build", "docs", "debug"},
     {"lint", "test", "release"}),
    ("test", {"base", "toolchain", "deps", "test"},
     {"lint", "build", "docs", "debug", "release"}),
])
def test_nine_stages_target_json(target: str, built: set, skipped: set) -> None:
    result = run(str(NINE), "--target", target, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    stages = data["stages"]
    assert len(stages) == 9
    assert stages[data["target"]]["name"] == target
    assert {s["name"] for s in stages if s["reachable"]} == built
    assert {s["name"] for s in stages if not s["reachable"]} == skipped
    by_name = {s["name"]: s for s in stages}
    assert by_name["debug"]["depends_on"] == [5, 6]
    assert by_name["release"]["depends_on"] == [0, 5]
    assert by_name["base"]["base"] == "debian:bookworm-slim"


def test_nine_stages_target_text() -> None:
    result = run("-f", str(NINE / "Dockerfile"), "--target", "debug")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "target 7 (debug), 6 to build" in out
    skipped = _section(out, "skipped:")
    for name in ("lint", "test", "release"):
        assert f"({name}): target 'debug' does not depend on it" in skipped
    for name in ("base", "toolchain", "deps", "build", "docs"):
        assert f"({name})" not in skipped
    assert "1: 1 (toolchain), 6 (docs)" in _section(out, "parallel levels:")
    assert "copies /usr/share/doc/app -> /usr/share/doc/app from stage 6 (docs)" in out


def test_multistage_example_default_target_and_build_arg() -> None:
    result = run(str(MULTI), "--build-arg", "GO_VERSION=1.22", "--build-arg", "APP=svc")
    assert result.exit_code == 0, result.output
    assert "from golang:1.22-bookworm" in result.output
    assert "copies /out/svc -> /app from stage 2 (build)" in result.output
    assert "stage 1 (test): target 'release' does not depend on it" in result.output


@pytest.mark.parametrize(("fmt", "marker"), [("dot", "digraph stages"), ("mermaid", "graph LR")])
def test_diagram_formats(fmt: str, marker: str) -> None:
    result = run(str(NINE), "--format", fmt)
    assert result.exit_code == 0 and result.output.startswith(marker)
    assert "s5" in result.output and "debian:bookworm-slim" in result.output


def test_dockerfile_from_stdin() -> None:
    result = run("-f", "-", stdin="FROM alpine AS a\nFROM scratch\nCOPY --from=a / /\n")
    assert result.exit_code == 0, result.output
    assert "copies / -> / from stage 0 (a)" in result.output


def test_errors_render_as_one_block_without_traceback(tmp_path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM alpine\nCOPY --chwon=1 a b\n")
    result = run(str(tmp_path))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "Dockerfile:2:6: unknown flag for COPY: --chwon" in result.output
    assert "did you mean '--chown'?" in result.output
    result = run(str(NINE), "--target", "relase")
    assert result.exit_code == 2 and "did you mean 'release'?" in result.output
    result = run(str(tmp_path / "nowhere"))
    assert result.exit_code != 0 and "cannot read the Dockerfile" in result.output


def test_console_script_prints_the_plan() -> None:
    out = subprocess.run([sys.executable, "-m", "cloche.cli.main", "plan", str(NINE),
                          "--target", "release", "--format", "json"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["target"] == 8
