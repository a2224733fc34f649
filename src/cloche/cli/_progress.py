"""Renderers of build progress: a live view for terminals, plain lines for CI logs, quiet.

The engine calls ``listener(event)`` from worker threads; every renderer here serialises its
output with a lock. ``plain`` prints one line per event as BuildKit's ``--progress=plain`` does:
``#N [stage k/n] TEXT`` (numbered as BuildKit numbers steps: FROM of an image, RUN, COPY,
ADD and WORKDIR; config-only steps are no work and are not shown), output lines prefixed with
the step number and the seconds since the step started (``#N 0.215 hi``); ``tty`` keeps a
live table of running stages with the last lines of each running step's output (``_live.py``,
imported only then: rich costs a no-op rebuild a tenth of its time).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from cloche.cli._units import step_size as _size
from cloche.engine import events as ev


class PlainRenderer:
    """One line per event, safe for logs; step numbers tie output lines to their step."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._numbers: dict[tuple[int, int], int] = {}
        self._started: dict[tuple[int, int], float] = {}

    def _number(self, step: ev.StepRef) -> int:
        key = (step.stage_index, step.step)
        if key not in self._numbers:
            self._numbers[key] = len(self._numbers) + 1
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
        if isinstance(event, ev.StageFinished):
            name = event.stage_name or f"stage-{event.stage_index}"
            return f"stage {name} done in {event.seconds:.1f}s ({event.layers} layers, {_size(event.size)})"
        if isinstance(event, ev.BuildFinished):
            names = f" as {', '.join(event.names)}" if event.names else ""
            return f"built {event.digest} ({_size(event.size)}) in {event.seconds:.1f}s{names}"
        return None


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
    return PlainRenderer()


def noop_lines(events: list[ev.Event]) -> list[str]:
    """What a plain no-op rebuild of the build that sent ``events`` prints before its last
    line: every step that made a layer CACHED, no step output, no pull, in the same order."""
    import dataclasses
    import io

    out = io.StringIO()
    render = PlainRenderer(out)
    for event in events:
        if isinstance(event, (ev.StepOutput, ev.Pulling, ev.BuildFinished)):
            continue
        if isinstance(event, ev.StepFinished):
            event = dataclasses.replace(event, seconds=0.0,
                                        cached=event.cached or event.layer_size is not None)
        elif isinstance(event, ev.StageFinished):
            event = dataclasses.replace(event, seconds=0.0)
        render(event)
    return out.getvalue().splitlines()
