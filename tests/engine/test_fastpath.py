"""The CLI's no-op fast path (cli/_fastpath.py): a rebuild whose inputs did not change answers
from the record the last build left, without starting the engine, and any change of an input
makes it build as usual.

Whether the engine started is read from Python's import log (PYTHONPROFILEIMPORTTIME): the
fast path must not import the engine's executor, a build always does.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cloche.cli._fastpath import racy, remote_sources
from tests.engine.conftest import BASE, Builder

# COPY . takes the context's listing over from the CLI's prefetch (engine/fastwalk.py)
DOCKERFILE = f"""FROM {BASE} AS build
COPY . /ctx/
COPY app.txt /src/
RUN wc -c /src/app.txt > /size
FROM {BASE}
COPY --from=build /size /size
"""


def _build(builder: Builder, ctx: Path, *args: str) -> tuple[str, bool]:
    """(the image ID printed by ``--progress quiet``, whether the engine ran)."""
    done = builder.cli("build", "--progress", "quiet", "-t", "fast:1", *args, str(ctx),
                       env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    return done.stdout.strip(), "cloche.engine.executor" in done.stderr


def _settled(ctx: Path) -> Path:
    """Let the context's timestamps age past the racy window (cli/_fastpath.py)."""
    time.sleep(0.3)
    return ctx


@pytest.fixture
def ctx(builder: Builder) -> Path:
    return _settled(builder.context(DOCKERFILE, {"app.txt": "hello\n", "other/x": "x"}))


def test_a_noop_rebuild_answers_without_the_engine(builder: Builder, ctx: Path) -> None:
    first, ran = _build(builder, ctx)
    assert ran
    again, ran = _build(builder, ctx)
    assert (again, ran) == (first, False)
    iid = builder.dir / "iid"
    plain = builder.cli("build", "-t", "fast:1", "--progress", "plain", "--iidfile", str(iid),
                        str(ctx))
    # the same options but --progress and --iidfile: those do not change the answer
    image = builder.store.image("fast:1")
    assert f"built {image.digest} " in plain.stderr and plain.stderr.rstrip().endswith("as fast:1")
    assert "CACHED" in plain.stderr
    assert str(image.config_digest) == first and iid.read_text() == first


def test_content_changed_with_the_same_size_and_mtime_rebuilds(builder: Builder,
                                                               ctx: Path) -> None:
    first, _ = _build(builder, ctx)
    st = (ctx / "app.txt").stat()
    (ctx / "app.txt").write_text("HELLO\n")
    os.utime(ctx / "app.txt", ns=(st.st_atime_ns, st.st_mtime_ns))  # ctime still moves
    second, ran = _build(builder, _settled(ctx))
    assert ran and second != first
    back, ran = _build(builder, ctx)
    assert (back, ran) == (second, False)


def test_dockerfile_store_and_option_changes_rebuild(builder: Builder, ctx: Path) -> None:
    first, _ = _build(builder, ctx)
    # another build arg
    digest, ran = _build(builder, ctx, "--build-arg", "X=1")
    assert ran and digest == first  # unused arg: same image, but the engine decided that
    # the Dockerfile
    (ctx / "Dockerfile").write_text(DOCKERFILE + "LABEL a=b\n")
    labelled, ran = _build(builder, _settled(ctx))
    assert ran and labelled != first
    # the store: the image removed by name is built again, not answered from the record
    builder.cli("rmi", "fast:1")
    again, ran = _build(builder, ctx)
    assert ran and again == labelled
    # --no-cache always builds
    assert _build(builder, ctx, "--no-cache")[1]


def test_the_base_retagged_rebuilds(builder: Builder, ctx: Path) -> None:
    first, _ = _build(builder, ctx)
    other = builder.context(f"FROM {BASE}\nRUN echo other > /other\n")
    builder.cli("build", "--progress", "quiet", "-t", BASE, str(other))  # BASE moves on
    second, ran = _build(builder, ctx)
    assert ran and second != first


def test_remote_add_is_never_answered_from_a_record() -> None:
    assert remote_sources(b"FROM x\nADD https://example.com/f /f\n")
    assert remote_sources(b"FROM x\n  add git@github.com:a/b.git /b\n")
    assert not remote_sources(b"FROM x\nCOPY a /b\nRUN curl https://x\n")


def test_racy_entries_keep_a_build_from_being_recorded() -> None:
    now = 1_800_000_000.5
    old = f"1 2 3 {now - 10:.10f} {now - 10:.10f} 644 0 0 f"
    fresh = f"1 2 3 {now - 10:.10f} {now - 0.05:.10f} 644 0 0 f"
    coarse = f"1 2 3 {now - 10:.10f} {int(now) - 1}.0000000000 644 0 0 f"
    future = f"1 2 3 {now + 5:.10f} {now - 10:.10f} 644 0 0 f"
    assert not racy([old], now)
    assert racy([old, fresh], now)
    assert racy([coarse], now)  # whole-second timestamps: a 2 s window
    assert racy([future], now)
