"""The state of a stage between two steps: filesystem layers, image config, ARG/ENV scope.

A ``StageState`` is a value: each step returns a new one. ``lowers`` are the directories
that, stacked by overlayfs (top first), make the stage's root filesystem: the flattened base
image at the bottom, then one overlay upper directory per step that changed something (upper
directories keep whiteouts and opaque markers in overlayfs' own format, so they stack as is).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from cloche.dockerfile.args import StageEnv
from cloche.oci.config import History, ImageConfig
from cloche.oci.image import Layer
from cloche.oci.mutate import now

HISTORY_COMMENT = "buildkit.dockerfile.v0"  # what BuildKit writes; tools group steps by it


@dataclass(frozen=True)
class StageState:
    """A stage after some of its steps."""

    config: ImageConfig
    layers: tuple[Layer, ...]
    lowers: tuple[Path, ...]  # top first
    env: StageEnv
    key: str = ""  # cache key of the last filesystem step (or of the base)

    def with_config(self, **changes: object) -> StageState:
        return replace(self, config=self.config.replace(**changes))

    def record(self, created_by: str, *, empty_layer: bool = True,
               created: str | None = None) -> StageState:
        """Add a history entry (``empty_layer``: the step made no layer).

        Steps that made no layer get no time of their own here: the image takes it from the
        layers around them (see ``fill_history_times``), so a rebuild from cache is identical.
        """
        if created is None and not empty_layer:
            created = now()
        entry = History(created=created, created_by=created_by, comment=HISTORY_COMMENT,
                        empty_layer=empty_layer)
        return replace(self, config=self.config.replace(history=self.config.history + (entry,)))

    def with_layer(self, layer: Layer, upper: Path, created_by: str,
                   created: str | None = None) -> StageState:
        """A step's new layer on top, its upper directory as the new top lower."""
        state = replace(self, layers=self.layers + (layer,), lowers=(upper,) + self.lowers)
        state = state.record(created_by, empty_layer=False, created=created)
        return replace(state, config=state.config.replace(
            diff_ids=tuple(x.diff_id for x in state.layers)))

    @property
    def size(self) -> int:
        """For progress: a layer whose blob is not written yet counts its tar's size."""
        return sum(layer.shown_size for layer in self.layers)


def fill_history_times(history: tuple[History, ...], fallback: str) -> tuple[History, ...]:
    """Give entries without a time the time of the closest layer step before them (or after
    them, for entries before the first one), as BuildKit's exporter does."""
    times = [h.created for h in history]
    last = None
    for i, t in enumerate(times):
        if t is None:
            times[i] = last
        else:
            last = t
    nxt = None
    for i in range(len(times) - 1, -1, -1):
        if times[i] is None:
            times[i] = nxt or fallback
        else:
            nxt = times[i]
    return tuple(replace(h, created=t) for h, t in zip(history, times))
