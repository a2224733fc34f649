"""Renderers of build progress: a live view for terminals, plain lines for CI logs, quiet.

The engine calls ``listener(event)`` from worker threads; every renderer here serialises its
output with a lock. ``plain`` prints one line per event as BuildKit's ``--progress=plain`` does:
``#N [stage k/n] TEXT`` (numbered as BuildKit numbers steps: FROM of an image, RUN, COPY,
ADD and WORKDIR; config-only steps are no work and are not shown), output lines prefixed with
the step number and the seconds since the step started (``#N 0.215 hi``), an output's blobs as
BuildKit's transfer lines (``#N sha256:... 1.05MB / 3.40MB 0.4s``, at most one a second per
blob, then ``... done``); ``tty`` keeps a live table of running stages with the last lines of
each running step's output and a bar per moving blob (``_live.py``, imported only then: rich
costs a no-op rebuild a tenth of its time).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from cloche import events as tev
from cloche.cli._units import step_size as _size
from cloche.cli._units import transfer_size as _transfer_size
from cloche.cli._units import transfer_text
from cloche.engine import events as ev
from cloche.oci.mediatypes import CONFIG_TYPES, MANIFEST_TYPES


def blob_label(event: tev.BlobProgress) -> str:
    """What a transfer line names: the blob's digest, or BuildKit's ``sending tarball``; an
    export names its config and manifest as BuildKit's exporter does."""
    kind = event.descriptor.media_type
    if kind == ev.TARBALL:
        return "sending tarball"
    if event.action == "exporting" and kind in CONFIG_TYPES:
        return f"exporting config {event.descriptor.digest}"
    if event.action == "exporting" and kind in MANIFEST_TYPES:
        return f"exporting manifest {event.descriptor.digest}"
    return str(event.descriptor.digest)


class TransferLines:
    """Plain lines for ``BlobProgress``: a blob's first event, then at most one a second per
    blob (``EVERY``), and its done line, so a log stays small however long a transfer runs."""

    EVERY = 1.0

    def __init__(self) -> None:
        self._last: dict[tuple[str, str, str], float] = {}

    def text(self, event: tev.BlobProgress) -> str | None:
        """``1.05MB / 3.40MB 0.4s`` (`` done`` for the last), or None: not now."""
        key = (event.action, event.reference, str(event.descriptor.digest))
        now = time.monotonic()
        final = event.total is not None and event.done >= event.total
        last = self._last.get(key)
        if final:
            self._last.pop(key, None)
        elif last is not None and now - last < self.EVERY:
            return None
        else:
            self._last[key] = now
        return transfer_text(event.done, event.total, now - event.started, final)


class PlainRenderer:
    """One line per event, safe for logs; step numbers tie output lines to their step."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._numbers: dict[object, int] = {}
        self._started: dict[tuple[int, int], float] = {}
        self._transfers = TransferLines()
        self._export: int | None = None  # the number of the output being written
        self._pulls: set[str] = set()  # base images being pulled (their full names)
        self._shown_pulls: set[tuple[str, str]] = set()  # pulls a FROM line took the number of

    def _number(self, step: ev.StepRef | object) -> int:
        key = (step.stage_index, step.step) if isinstance(step, ev.StepRef) else step
        if key not in self._numbers:  # (a FROM that pulled takes its pull's: not counted)
            self._numbers[key] = len(set(self._numbers.values())) + 1
        return self._numbers[key]

    def __call__(self, event: ev.Event) -> None:
        with self._lock:
            line = self._format(event)
            if line is not None:
                self.stream.write(line + "\n")
                self.stream.flush()

    def _format(self, event: ev.Event) -> str | None:
        if isinstance(event, ev.StageSkipped):
            name = event.stage_name or f"stage-{event.stage_index}"
            return f"skipped stage {name}: {event.reason}"
        if isinstance(event, ev.Pulling):
            self._pulls.add(_full_name(event.reference))
            return f"pulling {event.reference}"
        if isinstance(event, ev.BuildWarning):
            if event.rule:  # a build check: listed when the build ends (cli/_checks.py)
                return None
            if event.message.startswith("[Warning] "):  # the unused build args, as written
                return event.message
            where = f" (line {event.line})" if event.line else ""
            return f"WARNING{where}: {event.message}"
        if isinstance(event, (ev.StepStarted, ev.StepFinished)) and not event.step.shown:
            return None  # a config-only step: BuildKit shows no vertex for it
        if isinstance(event, ev.BaseResolved):  # BuildKit's [1/N] FROM line
            pulled = ("pulling", _full_name(event.step.text.removeprefix("FROM ")))
            key = (event.step.stage_index, event.step.step)
            if pulled in self._numbers and pulled not in self._shown_pulls \
                    and key not in self._numbers:  # its blobs' number (for one FROM)
                self._shown_pulls.add(pulled)
                self._numbers[key] = self._numbers[pulled]
            number = self._number(event.step)
            what = "CACHED" if event.cached else f"DONE {event.seconds:.1f}s"
            return f"#{number} {event.step.title}\n#{number} {what}"
        if isinstance(event, ev.StepStarted):
            self._started[(event.step.stage_index, event.step.step)] = time.monotonic()
            return f"#{self._number(event.step)} {event.step.title}"
        if isinstance(event, ev.StepOutput):  # BuildKit's: seconds since the step started
            since = self._started.get((event.step.stage_index, event.step.step))
            at = f"{time.monotonic() - since:.3f} " if since is not None else ""
            return f"#{self._number(event.step)} {at}{event.text}"
        if isinstance(event, ev.StepFinished):
            what = "CACHED" if event.cached else f"DONE {event.seconds:.1f}s"
            if event.imported:
                what += f" (imported from {event.imported})"
            if event.layer_size is not None and not event.cached:
                what += f" ({_size(event.layer_size)} layer)"
            return f"#{self._number(event.step)} {what}"
        if isinstance(event, ev.StepFailed):
            return f"#{self._number(event.step)} ERROR {event.message}"
        if isinstance(event, ev.ExportStarted):  # BuildKit's exporter vertex
            self._export = self._number(("export", event.name, len(self._numbers)))
            return f"#{self._export} {event.name}"
        if isinstance(event, tev.BlobProgress):
            text = self._transfers.text(event)
            if text is None:
                return None
            if self._export is not None and event.action == "exporting":
                number = self._export
            elif event.action == "pulling" and event.reference in self._pulls:
                number = self._number(("pulling", event.reference))  # its FROM's, later
            else:  # a transfer outside an export (a push, a pull): a vertex of its own
                own = ("transfer", event.action, event.reference)
                fresh = own not in self._numbers
                number = self._number(own)
                if fresh:
                    return (f"#{number} {event.action} {event.reference}\n"
                            f"#{number} {blob_label(event)} {text}")
            return f"#{number} {blob_label(event)} {text}"
        if isinstance(event, ev.ExportFinished):
            number = self._export if self._export is not None else self._number(("export", 0))
            self._export = None
            lines = []
            if event.tarball:
                size = f" {_transfer_size(event.size)}" if event.size is not None else ""
                lines.append(f"#{number} sending tarball{size} {event.seconds:.1f}s done")
            lines.append(f"#{number} DONE {event.seconds:.1f}s")
            return "\n".join(lines)
        if isinstance(event, ev.StageFinished):
            name = event.stage_name or f"stage-{event.stage_index}"
            return f"stage {name} done in {event.seconds:.1f}s ({event.layers} layers, {_size(event.size)})"
        if isinstance(event, ev.BuildFinished):
            names = f" as {', '.join(event.names)}" if event.names else ""
            return f"built {event.digest} ({_size(event.size)}) in {event.seconds:.1f}s{names}"
        return None


def _full_name(reference: str) -> str:
    """A reference as the registry client names it (``busybox`` ->
    ``docker.io/library/busybox:latest``), to match a build's pull with its blobs."""
    from cloche.oci.reference import Reference

    try:
        return str(Reference.parse(reference))
    except ValueError:
        return reference


class QuietRenderer:
    """Prints nothing while building; the CLI prints the image digest at the end."""

    def __call__(self, event: ev.Event) -> None:
        return None


def make_renderer(mode: str) -> ev.Listener:
    """The renderer for ``--progress``: auto picks tty when stderr is a terminal."""
    if mode == "auto":
        mode = "tty" if sys.stderr.isatty() else "plain"
    if mode == "quiet":
        return QuietRenderer()
    if mode == "tty":
        from cloche.cli._live import LiveRenderer

        return LiveRenderer()
    if mode == "rawjson":  # BuildKit's status stream as JSON lines (cli/_rawjson.py)
        from cloche.cli._rawjson import RawJSONRenderer

        return RawJSONRenderer()
    return PlainRenderer()


def noop_lines(events: list[ev.Event]) -> list[str]:
    """What a plain no-op rebuild of the build that sent ``events`` prints before its last
    line: every step that made a layer CACHED, no step output, no pull, in the same order."""
    import dataclasses
    import io

    out = io.StringIO()
    render = PlainRenderer(out)
    for event in events:
        if isinstance(event, (ev.StepOutput, ev.Pulling, ev.BuildFinished, tev.BlobProgress,
                              ev.ExportStarted, ev.ExportFinished)):
            continue
        if isinstance(event, ev.StepFinished):
            event = dataclasses.replace(event, seconds=0.0,
                                        cached=event.cached or event.layer_size is not None)
        elif isinstance(event, ev.StageFinished):
            event = dataclasses.replace(event, seconds=0.0)
        render(event)
    return out.getvalue().splitlines()
