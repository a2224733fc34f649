"""``cloche build --check`` / ``--call=check``, ``# check=error=true`` and the unused build
args warning, through the CLI (click runner; a FROM scratch build needs no base image)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cloche.cli.main import cli as main


def _context(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "a").write_text("a\n")
    return ctx


def test_check_prints_warnings_with_excerpt_and_exits_1(tmp_path: Path) -> None:
    ctx = _context(tmp_path, "FROM scratch as base\nCOPY a /a\n")
    result = CliRunner().invoke(main, ["build", "--check", str(ctx), "--root",
                                       str(tmp_path / "store")])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[1:5] == [
        "WARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/",
        "'as' and 'FROM' keywords' casing do not match",
        "Dockerfile:1",
        "--------------------"]
    assert "   1 | >>> FROM scratch as base" in result.output
    assert result.output.rstrip().endswith("Check complete, 1 warning has been found!")


def test_call_check_without_warnings_exits_0(tmp_path: Path) -> None:
    ctx = _context(tmp_path, "FROM scratch AS base\nCOPY a /a\n")
    result = CliRunner().invoke(main, ["build", "--call=check", str(ctx)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "Check complete, no warnings found."


def test_check_skip_all_directive(tmp_path: Path) -> None:
    ctx = _context(tmp_path, "# check=skip=all\nFROM scratch as base\nCMD x\n")
    result = CliRunner().invoke(main, ["build", "--check", str(ctx)])
    assert result.exit_code == 0, result.output


def test_error_true_fails_the_build_before_any_step(tmp_path: Path) -> None:
    ctx = _context(tmp_path, "# check=error=true\nFROM scratch as base\nRUN false\n")
    result = CliRunner().invoke(main, ["build", str(ctx), "--progress", "plain", "--root",
                                       str(tmp_path / "store")])
    assert result.exit_code != 0
    assert "lint violation found for rules: FromAsCasing" in result.output
    assert "RUN false" not in result.output.split("lint violation")[0]


def test_build_lists_warnings_and_unused_build_args(tmp_path: Path) -> None:
    ctx = _context(tmp_path, "FROM scratch AS base\nARG USED\nCOPY a /a\nCMD x\n")
    result = CliRunner().invoke(main, [
        "build", str(ctx), "--progress", "plain", "--root", str(tmp_path / "store"),
        "--build-arg", "FOO=1", "--build-arg", "USED=2", "--build-arg", "HTTP_PROXY=x"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "[Warning] One or more build-args [FOO] were not consumed" in lines
    assert lines[-1] == ("WARNING: JSONArgsRecommended: JSON arguments recommended for CMD to "
                         "prevent unintended behavior related to OS signals (line 4)")


def test_build_arg_check_config_replaces_the_directive(tmp_path: Path) -> None:
    ctx = _context(tmp_path, "# check=error=true\nFROM scratch as base\nCOPY a /a\n")
    result = CliRunner().invoke(main, [
        "build", str(ctx), "--progress", "plain", "--root", str(tmp_path / "store"),
        "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=FromAsCasing"])
    assert result.exit_code == 0, result.output
    assert "were not consumed" not in result.output
