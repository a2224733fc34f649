"""The console script starts, lists its subcommands and prints errors without a traceback."""

import subprocess
import sys

from click.testing import CliRunner

from cloche.cli.main import cli


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert "cloche" in result.output


def test_console_script_runs() -> None:
    out = subprocess.run([sys.executable, "-m", "cloche.cli.main", "--help"],
                         capture_output=True, text=True, check=True)
    assert "daemon" in out.stdout


def test_unknown_command_fails() -> None:
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code != 0
