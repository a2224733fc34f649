"""Failing builds: the error names the stage, the line and shows the output's tail; the CLI
prints it as one block without a traceback; one stage's failure stops the build promptly;
a user without root is told so clearly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloche.engine import events as ev
from cloche.engine.options import BuildOptions, parse_output
from cloche.errors import BuildError, ClocheError, InvalidReferenceError
from tests.engine.conftest import BASE, CLOCHE, PROJECT, Builder

FAILING = (f"FROM {BASE} AS base\n"
           "RUN echo fine\n"
           f"FROM base AS compile\n"
           "ENV X=1\n"
           "RUN echo first line; echo second line >&2; echo last words; exit 3\n"
           "FROM base\n"
           "COPY --from=compile /etc/passwd /p\n")


def test_failing_run_names_stage_line_and_output(builder: Builder) -> None:
    with pytest.raises(BuildError) as info:
        builder.build(FAILING)
    err = info.value
    assert err.stage == "compile"
    assert err.line == 5
    assert err.exit_status == 3
    assert "first line" in err.output_tail and "last words" in err.output_tail
    assert "second line" in err.output_tail  # stderr is part of the output too
    text = err.render()
    assert "compile" in text and ":5:" in text and "exit code: 3" in text


def test_cli_prints_one_block_and_exits_non_zero(builder: Builder) -> None:
    ctx = builder.context(FAILING)
    result = builder.cli("build", "--progress", "plain", str(ctx), check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    block = result.stderr[result.stderr.index("error:"):]
    assert "Dockerfile:5" in block and "[stage compile]" in block
    assert "last words" in block
    # one block: the error line, the output tail (indented, in the order written), then the
    # failing instruction in its Dockerfile, as BuildKit prints it (issue 11, divergence 7)
    first, heading, *rest = block.rstrip("\n").splitlines()
    assert heading == "output (last lines):"
    assert rest[:3] == ["  first line", "  second line", "  last words"]
    assert rest[3:] == EXCERPT


# BuildKit's source excerpt (v0.23 solver/errdefs Source.Print, shown by buildx; the Docker
# engine's v0.8 client prints none): the file and line, then the instruction marked >>> with
# two lines either side, numbered.
EXCERPT = ["Dockerfile:5",
           "--------------------",
           "   3 |     FROM base AS compile",
           "   4 |     ENV X=1",
           "   5 | >>> RUN echo first line; echo second line >&2; echo last words; exit 3",
           "   6 |     FROM base",
           "   7 |     COPY --from=compile /etc/passwd /p",
           "--------------------"]


def test_failing_run_output_keeps_the_order_it_was_written_in(builder: Builder) -> None:
    """stdout and stderr are one stream: the tail is in the order written and always ends
    with the last line the step printed (they were two pipes read by two threads)."""
    script = "; ".join(f"echo out{i}; echo err{i} >&2" for i in range(10))
    with pytest.raises(BuildError) as info:
        builder.build(f"FROM {BASE}\nRUN {script}; echo the end >&2; exit 1\n")
    expected = [f"{kind}{i}" for i in range(10) for kind in ("out", "err")] + ["the end"]
    assert info.value.output_tail.splitlines() == expected[-20:]
    printed = [e.text for e in builder.recorder.of(ev.StepOutput)]
    assert printed == expected


def test_excerpt_of_a_failing_instruction(builder: Builder) -> None:
    with pytest.raises(BuildError) as info:
        builder.build(FAILING)
    assert info.value.excerpt() == EXCERPT
    assert "\n".join(EXCERPT) in info.value.render()


def test_excerpt_marks_every_line_of_a_multi_line_instruction(builder: Builder) -> None:
    dockerfile = f"FROM {BASE}\nRUN true\nRUN echo a && \\\n    false\n"
    with pytest.raises(BuildError) as info:
        builder.build(dockerfile)
    assert info.value.excerpt() == [
        "Dockerfile:3", "--------------------",
        "   2 |     RUN true",
        "   3 | >>> RUN echo a && \\", "   4 | >>>     false", "   5 |     ",
        "--------------------"]


def test_error_in_a_later_line_of_a_multi_line_run(builder: Builder) -> None:
    dockerfile = f"FROM {BASE}\nRUN true\nRUN echo a && \\\n    false\n"
    with pytest.raises(BuildError) as info:
        builder.build(dockerfile)
    assert info.value.line == 3


def test_failure_stops_the_build_promptly(builder: Builder) -> None:
    """A `sleep 30` running in another stage must not hold the failed build for 30 s.

    20 s is only a timeout here (the build is expected in a few seconds), not a speed claim.
    """
    dockerfile = (f"FROM {BASE} AS slow\nRUN sleep 30\n"
                  f"FROM {BASE} AS bad\nRUN sleep 1 && exit 9\n"
                  f"FROM {BASE}\nCOPY --from=slow /etc/passwd /a\nCOPY --from=bad /etc/passwd /b\n")
    started = time.monotonic()
    with pytest.raises(BuildError) as info:
        builder.build(dockerfile, jobs=2)
    took = time.monotonic() - started
    assert info.value.stage == "bad" and info.value.exit_status == 9
    assert took < 20, f"the failed build waited {took:.0f}s for the sleeping stage"


def test_missing_base_image_is_a_clean_error(builder: Builder) -> None:
    ctx = builder.context("FROM nosuchimage-here.invalid/x:1\nRUN true\n")
    result = builder.cli("build", str(ctx), check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr and "nosuchimage-here.invalid/x:1" in result.stderr


def test_bad_instruction_in_dockerfile_points_at_the_line(builder: Builder) -> None:
    ctx = builder.context(f"FROM {BASE}\nRUN true\nFROBNICATE now\n")
    result = builder.cli("build", str(ctx), check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert ":3" in result.stderr


def test_copy_of_missing_file_names_the_line(builder: Builder) -> None:
    with pytest.raises(ClocheError) as info:
        builder.build(f"FROM {BASE}\nCOPY nothere.txt /x\n")
    assert "nothere.txt" in str(info.value) or "nothere.txt" in info.value.render()
    assert ":2" in info.value.render()


def _unprivileged_python() -> tuple[str, dict[str, str]]:
    """An interpreter uid 65534 may run, and the environment that lets it import cloche.

    The venv's interpreter links to one under /root (mode 0700 here), so the system's
    python of the same minor version is used, with the source and the venv's packages on
    PYTHONPATH (an editable install's .pth is not read through PYTHONPATH).
    """
    site = PROJECT / ".venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" \
        / "site-packages"
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent",
           "PYTHONPATH": f"{PROJECT / 'src'}:{site}"}
    candidates = [sys.executable,
                  f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"]
    for python in candidates:
        probe = subprocess.run([python, "-c", "import cloche.cli.main, rich, httpx, isal"],
                               user=65534, group=65534, capture_output=True, text=True,
                               cwd="/", env=env) if _may_exec(python) else None
        if probe is not None and probe.returncode == 0:
            return python, env
    raise AssertionError("no interpreter that uid 65534 can run cloche with: tried "
                         + ", ".join(candidates))


def _may_exec(path: str) -> bool:
    """Whether uid 65534 can reach and run ``path`` (every directory on the way o+x)."""
    p = Path(path)
    if not p.exists():
        return False
    real = p.resolve()
    dirs_ok = all(os.stat(d).st_mode & 0o001 for d in real.parents)
    return dirs_ok and bool(os.stat(real).st_mode & 0o001)


def test_not_root_is_told_clearly(builder: Builder, tmp_path: Path) -> None:
    """`cloche build` as uid 65534: exit non-zero, the message names root, no traceback."""
    python, env = _unprivileged_python()
    ctx = tmp_path / "unprivileged"
    ctx.mkdir()
    os.chmod(tmp_path, 0o755)
    (ctx / "Dockerfile").write_text(f"FROM {BASE}\nRUN true\n")
    store = tmp_path / "nobody-store"
    store.mkdir()
    shutil.chown(store, 65534, 65534)
    result = subprocess.run([python, "-m", "cloche.cli.main", "build", "--root", str(store),
                             str(ctx)], user=65534, group=65534, capture_output=True,
                            text=True, cwd="/", timeout=60, env=env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "root" in result.stderr
    assert result.stderr.startswith("error:")
    assert "hint:" in result.stderr



def test_ctrl_c_ends_the_build_and_its_steps(builder: Builder) -> None:
    """SIGINT (what Ctrl-C sends) ends `cloche build` with 130 and kills the running steps."""
    marker = f"sleep 4{os.getpid() % 1000:03d}"  # a command line no other test runs
    ctx = builder.context(f"FROM {BASE} AS a\nRUN {marker}\n"
                          f"FROM {BASE}\nCOPY --from=a /etc/passwd /p\n")
    argv = CLOCHE + ["build", "--root", str(builder.root), "--progress", "plain", str(ctx)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not _running(marker):
            assert time.monotonic() < deadline and proc.poll() is None, "the step never started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=15)  # a timeout only, not a speed claim
        except subprocess.TimeoutExpired:
            pytest.fail("cloche build still runs 15 s after SIGINT")
        assert proc.returncode == 130 and "Traceback" not in err
        time.sleep(0.5)
        assert not _running(marker), "the step's process outlived the build"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _running(command: str) -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().replace(b"\0", b" ").strip() == command.encode():
                return True
        except OSError:
            continue
    return False


def test_a_bad_tag_fails_before_any_step_runs(builder: Builder) -> None:
    ctx = builder.context(f"FROM {BASE}\nRUN echo step-ran\n")
    result = builder.cli("build", "--progress", "plain", "-t", "Bad Name", str(ctx), check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--tag 'Bad Name'" in result.stderr
    assert "step-ran" not in result.stderr  # nothing was built
    with pytest.raises(InvalidReferenceError):
        BuildOptions(context=str(ctx), outputs=(parse_output("type=image,name=UPPER:1"),))
