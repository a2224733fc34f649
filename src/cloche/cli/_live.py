"""The live terminal view of build progress (``--progress=tty``), drawn with rich; the bars
of moving blobs (an export's, a pull's, a push's) with their bytes and rate."""

from __future__ import annotations

import threading
import time
from collections import deque
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from cloche import events as tev
from cloche.cli._units import step_size as _size
from cloche.cli._units import transfer_size
from cloche.engine import events as ev


class TransferBars:
    """A bar with bytes and rate for each blob moving (``BlobProgress``), gone once its last
    event (``done == total``) came. Thread-safe; ``rows()`` is drawn by a ``Live``."""

    WIDTH = 20

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str, str], tuple[tev.BlobProgress, float]] = {}

    def update(self, event: tev.BlobProgress) -> None:
        key = (event.action, event.reference, str(event.descriptor.digest))
        with self._lock:
            if event.total is not None and event.done >= event.total:
                self._active.pop(key, None)
            else:
                self._active[key] = (event, time.monotonic())

    def rows(self) -> list[Text]:
        with self._lock:
            items = list(self._active.values())
        return [self._row(event, at) for event, at in items]

    def _row(self, event: tev.BlobProgress, at: float) -> Text:
        label = "sending tarball" if event.descriptor.media_type == ev.TARBALL \
            else f"{event.descriptor.digest.algorithm}:{event.descriptor.digest.short}"
        elapsed = max(at - event.started, 1e-3)
        rate = f"{transfer_size(int(event.done / elapsed))}/s"
        if event.total:
            filled = min(self.WIDTH, self.WIDTH * event.done // event.total)
            bar = Text.assemble(("━" * filled, "cyan"), ("━" * (self.WIDTH - filled), "grey37"))
            amount = f"{transfer_size(event.done)} / {transfer_size(event.total)}"
        else:
            bar = Text("")
            amount = transfer_size(event.done)
        row = Text.assemble(("  ", ""), (f"{event.action} {label} ", "dim"), bar,
                            (f" {amount}  {rate}", "dim"))
        row.no_wrap = True  # one row a blob, cut on a narrow terminal
        row.overflow = "ellipsis"
        return row


class TransferView:
    """``cloche pull``/``cloche push`` on a terminal: the bars of the blobs moving, and the
    command's lines (``print``) scrolling above them."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.bars = TransferBars()
        self._live = Live(console=self.console, refresh_per_second=8, transient=True,
                          get_renderable=lambda: Group(*self.bars.rows()))

    def __enter__(self) -> TransferView:
        self._live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._live.__exit__(kind, value, traceback)

    def __call__(self, event: tev.Event) -> None:
        if isinstance(event, tev.BlobProgress):
            self.bars.update(event)

    def print(self, text: str) -> None:
        self._live.refresh()
        self.console.print(Text(text))


class LiveRenderer:
    """A live terminal view: finished steps scroll above, running steps stay at the bottom."""

    TAIL = 5

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._lock = threading.Lock()
        self._running: dict[tuple[int, int], tuple[ev.StepRef, float, deque[str]]] = {}
        self._bars = TransferBars()
        self._exports: dict[str, float] = {}  # outputs being written: when they started
        self._live = Live(console=self.console, refresh_per_second=8, transient=True,
                          get_renderable=self._render)

    def __enter__(self) -> LiveRenderer:
        self._live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._live.__exit__(kind, value, traceback)

    def _render(self) -> Group:
        with self._lock:
            rows = []
            now = time.monotonic()
            for step, started, tail in self._running.values():
                rows.append(Text.assemble(("=> ", "cyan"), step.title,
                                          (f"  {now - started:.1f}s", "dim")))
                for line in tail:
                    rows.append(Text("   " + line[:200], style="dim"))
            for name, started in self._exports.items():
                rows.append(Text.assemble(("=> ", "cyan"), name,
                                          (f"  {now - started:.1f}s", "dim")))
        return Group(*rows, *self._bars.rows())

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, (ev.StepStarted, ev.StepFinished)) and not event.step.shown:
            return  # a config-only step: BuildKit shows no vertex for it
        if isinstance(event, tev.BlobProgress):
            self._bars.update(event)
            return
        with self._lock:
            if isinstance(event, ev.ExportStarted):
                self._exports[event.name] = time.monotonic()
                return
            if isinstance(event, ev.ExportFinished):
                self._exports.pop(event.name, None)
            if isinstance(event, ev.StepStarted):
                key = (event.step.stage_index, event.step.step)
                self._running[key] = (event.step, time.monotonic(), deque(maxlen=self.TAIL))
                return
            if isinstance(event, ev.StepOutput):
                entry = self._running.get((event.step.stage_index, event.step.step))
                if entry:
                    entry[2].append(event.text)
                return
            if isinstance(event, (ev.StepFinished, ev.StepFailed)):
                self._running.pop((event.step.stage_index, event.step.step), None)
        if isinstance(event, (ev.StepFinished, ev.StepFailed, ev.ExportFinished)):
            # Rich redraws the live area after a print with the renderable of its last tick:
            # refresh first, or the finished step shows as running under its own ✔ line.
            self._live.refresh()
        self._print_final(event)

    def _print_final(self, event: ev.Event) -> None:
        if isinstance(event, ev.BaseResolved):
            status = Text("CACHED", style="blue") if event.cached \
                else Text(f"{event.seconds:.1f}s", style="green")
            self.console.print(Text.assemble(("✔ ", "green"), event.step.title, "  ", status))
            return
        if isinstance(event, ev.StepFinished):
            if event.cached:
                status = Text("CACHED", style="blue")
                if event.imported:
                    status.append(f" (imported from {event.imported})", style="dim")
            else:
                status = Text(f"{event.seconds:.1f}s", style="green")
                if event.layer_size is not None:
                    status.append(f"  {_size(event.layer_size)}", style="dim")
            self.console.print(Text.assemble(("✔ ", "green"), event.step.title, "  ", status))
        elif isinstance(event, ev.ExportFinished):
            size = f"  {transfer_size(event.size)}" if event.size is not None else ""
            self.console.print(Text.assemble(("✔ ", "green"), event.name, "  ",
                                             (f"{event.seconds:.1f}s", "green"), (size, "dim")))
        elif isinstance(event, ev.StepFailed):
            self.console.print(Text.assemble(("✘ ", "red"), event.step.title, "  ",
                                             (event.message, "red")))
        elif isinstance(event, ev.StageSkipped):
            name = event.stage_name or f"stage-{event.stage_index}"
            self.console.print(Text(f"– skipped stage {name}: {event.reason}", style="dim"))
        elif isinstance(event, ev.Pulling):
            self.console.print(Text(f"↓ pulling {event.reference}", style="dim"))
        elif isinstance(event, ev.BuildWarning) and not event.rule:
            where = f" (line {event.line})" if event.line else ""
            self.console.print(Text(f"! WARNING{where}: {event.message}", style="yellow"))
        elif isinstance(event, ev.StageFinished):
            name = event.stage_name or f"stage-{event.stage_index}"
            self.console.print(Text(f"■ stage {name}: {event.seconds:.1f}s, "
                                    f"{event.layers} layers, {_size(event.size)}", style="bold"))
        elif isinstance(event, ev.BuildFinished):
            names = f" as {', '.join(event.names)}" if event.names else ""
            self.console.print(Text(f"built {event.digest} ({_size(event.size)}) "
                                    f"in {event.seconds:.1f}s{names}", style="bold green"))
