"""The engine's scheduling of stages: parallel where the graph allows, unreachable ones skipped.

Parallelism is proved by intervals each stage records inside the build (``/proc/uptime``, a
clock every namespace shares, at the start and end of its RUN), never by timing the build:
with ``--jobs 4`` all four intervals overlap; with the default pool (the cores) at least two
do. busybox's ``date`` has no ``%N``, hence /proc/uptime (10 ms resolution, ample for 3 s).
"""

from __future__ import annotations

import time
from pathlib import Path

from cloche.engine import events as ev
from tests.engine.conftest import BASE, Builder, rootfs

NAMES = ("one", "two", "three", "four")
PARALLEL = "".join(
    f"FROM {BASE} AS {name}\n"
    "RUN cat /proc/uptime > /start && sleep 3 && cat /proc/uptime > /end\n"
    for name in NAMES
) + f"FROM {BASE}\n" + "".join(f"COPY --from={name} /start /end /{name}/\n" for name in NAMES)


def intervals(root: Path) -> dict[str, tuple[float, float]]:
    def read(path: Path) -> float:
        return float(path.read_text().split()[0])
    return {n: (read(root / n / "start"), read(root / n / "end")) for n in NAMES}


def max_overlapping(spans: dict[str, tuple[float, float]]) -> int:
    """The largest number of intervals that share one instant (checked at every start)."""
    return max(sum(1 for s, e in spans.values() if s <= start < e)
               for start, _ in spans.values())


def test_four_stages_all_overlap_with_four_jobs(builder: Builder, tmp_path: Path) -> None:
    started = time.monotonic()
    result = builder.build(PARALLEL, jobs=4)
    print(f"\nfour 3 s stages, --jobs 4: {time.monotonic() - started:.1f}s wall")
    spans = intervals(rootfs(result.image, tmp_path / "out"))
    assert all(end - start >= 2.9 for start, end in spans.values()), spans
    assert max(s for s, _ in spans.values()) < min(e for _, e in spans.values()), \
        f"not all four stages ran at the same time: {spans}"


def test_waiting_stages_hold_no_job_slot(builder: Builder, tmp_path: Path) -> None:
    """``--jobs`` bounds CPU work, not waiting: with one slot, four stages whose RUN sleeps
    still sleep at the same time (BuildKit runs them all at once too)."""
    dockerfile = PARALLEL.replace("sleep 3", "sleep 2")
    result = builder.build(dockerfile, jobs=1)
    spans = intervals(rootfs(result.image, tmp_path / "out"))
    assert all(end - start >= 1.9 for start, end in spans.values()), spans
    assert max(s for s, _ in spans.values()) < min(e for _, e in spans.values()), \
        f"with --jobs 1 the RUN steps did not all run at once: {spans}"


def test_default_jobs_run_at_least_two_at_once(builder: Builder, tmp_path: Path) -> None:
    ctx = builder.context(PARALLEL)
    started = time.monotonic()
    builder.cli("build", "--progress", "plain", "-o", f"type=local,dest={tmp_path / 'out'}",
                str(ctx))
    print(f"\nfour 3 s stages, default jobs: {time.monotonic() - started:.1f}s wall")
    spans = intervals(tmp_path / "out")
    assert max_overlapping(spans) >= 2, f"stages ran one at a time: {spans}"


def test_unreachable_stage_is_not_run(builder: Builder, tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE} AS broken\nRUN exit 1\n"
                  f"FROM {BASE} AS fine\nRUN echo fine > /fine\n")
    result = builder.build(dockerfile)
    skipped = builder.recorder.of(ev.StageSkipped)
    assert [e.stage_name for e in skipped] == ["broken"]
    started = {e.stage_name for e in builder.recorder.of(ev.StageStarted)}
    assert started == {"fine"}
    assert (rootfs(result.image, tmp_path / "out") / "fine").read_text() == "fine\n"


def test_target_selects_a_middle_stage(builder: Builder, tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE} AS first\nRUN echo first > /first\n"
                  f"FROM first AS second\nRUN echo second > /second\n"
                  f"FROM second AS third\nRUN exit 1\n"
                  f"FROM {BASE} AS other\nRUN exit 1\n")
    result = builder.build(dockerfile, target="second")
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "first").read_text() == "first\n"
    assert (root / "second").read_text() == "second\n"
    assert {e.stage_name for e in builder.recorder.of(ev.StageSkipped)} == {"third", "other"}
    # base layer + one layer per RUN of first and second, nothing more
    assert len(result.image.layers) == 3


def test_target_through_the_cli(builder: Builder, tmp_path: Path) -> None:
    ctx = builder.context(f"FROM {BASE} AS a\nRUN echo a > /a\nFROM {BASE} AS b\nRUN exit 3\n")
    builder.cli("build", "--target", "a", "-o", f"type=local,dest={tmp_path / 'out'}", str(ctx))
    assert (tmp_path / "out" / "a").read_text() == "a\n"


def test_only_the_final_stage_layers_ship(builder: Builder, tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE} AS tools\n"
                  "RUN dd if=/dev/zero of=/big bs=1024 count=512 && echo artefact > /artefact\n"
                  "FROM scratch\nCOPY --from=tools /artefact /artefact\n")
    result = builder.build(dockerfile)
    assert len(result.image.layers) == 1
    root = rootfs(result.image, tmp_path / "out")
    assert sorted(p.name for p in root.iterdir()) == ["artefact"]
    assert result.image.size < 10_000
