"""The build cache: rebuilds reuse what did not change, and nothing else (issue 5's proofs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from cloche.engine import events as ev
from tests.engine.conftest import BASE, CLOCHE, Builder

MULTISTAGE = f"""\
FROM {BASE} AS deps
RUN echo deps > /deps.txt
COPY lib.txt /lib.txt

FROM {BASE} AS build
COPY --from=deps /deps.txt /lib.txt /in/
COPY main.txt /src/main.txt
RUN cat /in/deps.txt /in/lib.txt /src/main.txt > /app

FROM {BASE}
COPY --from=build /app /app
LABEL built=yes
"""
FILES = {"lib.txt": "lib v1\n", "main.txt": "main v1\n"}


def steps(builder: Builder) -> tuple[list[str], list[str]]:
    """(titles of steps run, titles of steps taken from the cache) of the last build."""
    finished = builder.recorder.of(ev.StepFinished)
    ran = [e.step.text for e in finished if not e.cached]
    cached = [e.step.text for e in finished if e.cached]
    return ran, cached


def rebuild(builder: Builder, ctx: Path, **options: object):
    from cloche import api
    from cloche.engine.options import BuildOptions

    builder.recorder = type(builder.recorder)()
    return api.build(BuildOptions(context=str(ctx), root=builder.root, **options),
                     listener=builder.recorder)


def test_noop_rebuild_runs_nothing_and_gives_the_same_digest(builder: Builder) -> None:
    first = builder.build(MULTISTAGE, FILES)
    ran, cached = steps(builder)
    assert not cached and len(ran) == 7
    ctx = builder.dir / "ctx1"
    second = rebuild(builder, ctx)
    ran, cached = steps(builder)
    assert [r for r in ran if not r.startswith("LABEL")] == []
    assert len(cached) == 6
    assert second.digest == first.digest


def test_one_changed_file_reruns_only_the_steps_that_depend_on_it(builder: Builder) -> None:
    first = builder.build(MULTISTAGE, FILES)
    ctx = builder.dir / "ctx1"
    (ctx / "main.txt").write_text("main v2\n")
    second = rebuild(builder, ctx)
    ran, cached = steps(builder)
    assert ran == ["COPY main.txt /src/main.txt",
                   "RUN cat /in/deps.txt /in/lib.txt /src/main.txt > /app",
                   "COPY --from=build /app /app", "LABEL built=yes"]
    assert "RUN echo deps > /deps.txt" in cached and "COPY lib.txt /lib.txt" in cached
    assert second.digest != first.digest


def test_an_mtime_change_alone_reruns_nothing(builder: Builder) -> None:
    first = builder.build(MULTISTAGE, FILES)
    ctx = builder.dir / "ctx1"
    later = time.time() + 3600
    for name in FILES:
        os.utime(ctx / name, (later, later))
    second = rebuild(builder, ctx)
    ran, _ = steps(builder)
    assert ran == ["LABEL built=yes"]
    assert second.digest == first.digest


def test_no_cache_and_no_cache_filter(builder: Builder) -> None:
    builder.build(MULTISTAGE, FILES)
    ctx = builder.dir / "ctx1"
    rebuild(builder, ctx, no_cache=True)
    assert not steps(builder)[1]
    rebuild(builder, ctx, no_cache_filter=("deps",))
    ran, _ = steps(builder)
    assert "RUN echo deps > /deps.txt" in ran and "COPY main.txt /src/main.txt" not in ran


def test_a_build_arg_change_reruns_run_steps(builder: Builder) -> None:
    dockerfile = f"FROM {BASE}\nARG V=1\nRUN echo $V > /v\n"
    builder.build(dockerfile)
    ctx = builder.dir / "ctx1"
    rebuild(builder, ctx, build_args={"V": "1"})
    assert steps(builder)[0] == ["ARG V=1"]
    rebuild(builder, ctx, build_args={"V": "2"})
    assert "RUN echo $V > /v" in steps(builder)[0]


def test_a_corrupt_or_missing_cache_entry_is_a_miss(builder: Builder) -> None:
    first = builder.build(MULTISTAGE, FILES)
    records = sorted((builder.root / "cache" / "steps").glob("*/*.json"))
    assert records
    records[0].write_text("{not json")
    records[1].unlink()
    doc = json.loads(records[2].read_text())
    if doc.get("snapshot"):
        import shutil
        shutil.rmtree(builder.root / doc["snapshot"])
    second = rebuild(builder, builder.dir / "ctx1")
    ran, cached = steps(builder)
    assert len(ran) >= 3 and cached
    from tests.engine.conftest import rootfs
    a = rootfs(first.image, builder.dir / "a")
    b = rootfs(second.image, builder.dir / "b")
    assert (a / "app").read_bytes() == (b / "app").read_bytes() == b"deps\nlib v1\nmain v1\n"


def test_two_builds_on_one_store_at_once(builder: Builder) -> None:
    ctx = builder.context(MULTISTAGE.replace("RUN echo deps", "RUN sleep 1 && echo deps"), FILES)
    procs = [subprocess.Popen(CLOCHE + ["build", "--root", str(builder.root), "--progress",
                                        "plain", "-t", f"both:{i}", str(ctx)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    from tests.engine.conftest import rootfs
    store = builder.store
    trees = [rootfs(store.image(f"both:{i}"), builder.dir / f"tree{i}") for i in range(2)]
    assert [(t / "app").read_text() for t in trees] == ["deps\nlib v1\nmain v1\n"] * 2
    rebuild(builder, ctx)  # and the cache both wrote is whole: a third build runs nothing
    assert steps(builder)[0] == ["LABEL built=yes"]


def test_a_build_killed_mid_step_then_rerun_succeeds(builder: Builder) -> None:
    ctx = builder.context(f"FROM {BASE}\nRUN echo start > /s && sleep 30 && echo end > /e\n"
                          "RUN echo after > /after\n")
    proc = subprocess.Popen(CLOCHE + ["build", "--root", str(builder.root), "--progress",
                                      "plain", str(ctx)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    seen = ""
    while "RUN echo start" not in seen and time.monotonic() < deadline:
        seen += proc.stdout.readline()
    time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(builder.root) not in mounts, "a killed build left mounts behind"
    (ctx / "Dockerfile").write_text(f"FROM {BASE}\nRUN echo start > /s && echo end > /e\n"
                                    "RUN echo after > /after\n")
    result = rebuild(builder, ctx)
    from tests.engine.conftest import rootfs
    tree = rootfs(result.image, builder.dir / "rootfs")
    assert (tree / "e").read_text() == "end\n" and (tree / "after").read_text() == "after\n"
    pruned = builder.cli("prune", "-f")
    assert "Deleted" in pruned.stdout
    assert not list((builder.root / "builds").glob("*")), "prune leaves no dead build folder"


def test_du_and_prune(builder: Builder) -> None:
    builder.build(MULTISTAGE, FILES, tags=("app:1",))
    usage = json.loads(builder.cli("du", "--format", "json").stdout)
    assert usage["records"] == 6 and usage["step_snapshot_bytes"] > 0
    unasked = builder.cli("prune", "--all", check=False)  # no terminal to confirm: refused
    assert unasked.returncode != 0 and "-f/--force" in unasked.stderr
    assert json.loads(builder.cli("du", "--format", "json").stdout) == usage
    builder.cli("prune", "-f")
    after = json.loads(builder.cli("du", "--format", "json").stdout)
    assert 0 < after["records"] < usage["records"]  # what app:1 does not use went first
    builder.cli("prune", "--all", "-f")
    empty = json.loads(builder.cli("du", "--format", "json").stdout)
    assert empty["records"] == 0 and empty["cache_bytes"] == 0
    assert builder.store.image("app:1").layers  # images are not build cache
    bad = builder.cli("prune", "--filter", "since=1h", "-f", check=False)
    assert bad.returncode != 0 and "until=DURATION" in bad.stderr
