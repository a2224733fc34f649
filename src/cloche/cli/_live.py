"""The live terminal view of build progress (``--progress=tty``), drawn with rich."""

from __future__ import annotations

import threading
import time
from collections import deque
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from cloche.cli._units import step_size as _size
from cloche.engine import events as ev


class LiveRenderer:
    """A live terminal view: finished steps scroll above, running steps stay at the bottom."""

    TAIL = 5

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._lock = threading.Lock()
        self._running: dict[tuple[int, int], tuple[ev.StepRef, float, deque[str]]] = {}
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
            return Group(*rows)

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, (ev.StepStarted, ev.StepFinished)) and not event.step.shown:
            return  # a config-only step: BuildKit shows no vertex for it
        with self._lock:
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
        if isinstance(event, (ev.StepFinished, ev.StepFailed)):
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
