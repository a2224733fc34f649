"""Who made what: each stage's weight and each final layer's stage and instruction.

For a build, the engine's ``StageReport`` per stage gives the base as written in FROM, the
parent stage, the stage's config (its history) and each layer's diff id and size; the step
events give each instruction as written (with its ``--from``) and its line. A stage's new
layers are its last ``new_layers`` history entries that have a layer, matched in order to its
steps of the same instruction. The final image is the target's chain (its base image, then each
stage it is built FROM, then itself), so its layers map to stages by position; ``COPY --from``
layers of that chain say what other stages (or images) ship.

For an image alone, the history's ``created_by`` names each layer's instruction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cloche.explainer.model import LayerWeight, Source, StageWeight

if TYPE_CHECKING:
    from cloche.engine.events import Event
    from cloche.engine.pipeline import BuildResult, StageReport
    from cloche.oci.config import History
    from cloche.oci.image import Image
    from cloche.store import Store

__all__ = ["Attribution", "LayerOrigin", "attribute_build", "attribute_image",
           "clean_created_by"]

_FROM = re.compile(r"--from=(\S+)")


@dataclass(frozen=True)
class LayerOrigin:
    stage: str | None          # a stage label, or "base IMAGE"
    instruction: str
    line: int | None = None


@dataclass
class Attribution:
    """The final image's layers' origins, the stages' weights, and which stage owns each
    history entry of the final image."""

    layers: list[LayerWeight]
    stages: list[StageWeight]
    sources: list[Source]
    history_owner: list[str | None] = field(default_factory=list)
    history_layer: dict[int, int] = field(default_factory=dict)  # history index -> layer


    def origin(self, layer: int) -> LayerOrigin:
        if 0 <= layer < len(self.layers):
            lw = self.layers[layer]
            return LayerOrigin(lw.stage, lw.instruction, lw.line)
        return LayerOrigin(None, "")


def clean_created_by(text: str | None) -> str:
    """History's ``created_by`` as an instruction: BuildKit's suffix and Docker's legacy
    ``/bin/sh -c #(nop)`` prefix dropped."""
    text = (text or "").strip()
    if text.endswith("# buildkit"):
        text = text[: -len("# buildkit")].rstrip()
    for prefix in ("/bin/sh -c #(nop) ", "/bin/sh -c #(nop)"):
        if text.startswith(prefix):
            return text[len(prefix):].strip()
    return text


def history_layers(image: Image) -> dict[int, int]:
    """Which layer each history entry with a layer made (history index -> layer index), when
    the history lists one entry per layer."""
    indices = [j for j, h in enumerate(image.config.history) if not h.empty_layer]
    if len(indices) != len(image.layers):
        return {}
    return {j: i for i, j in enumerate(indices)}


def _layer_entries(history: Sequence[History], count: int) -> list[History | None]:
    """The history entries of the ``count`` layers, bottom first (None where missing)."""
    with_layer = [h for h in history if not h.empty_layer]
    if len(with_layer) != count:
        return [None] * count
    return list(with_layer)


def attribute_image(image: Image, reference: str | None) -> Attribution:
    """An image alone: one pseudo stage, each layer named by its history."""
    entries = _layer_entries(image.config.history, len(image.layers))
    layers = [LayerWeight(i, layer.size, clean_created_by(h.created_by if h else None)
                          or (h.comment or "" if h else ""), stage=None,
                          digest=str(layer.digest))
              for i, (layer, h) in enumerate(zip(image.layers, entries))]
    size = sum(layer.size for layer in image.layers)
    stage = StageWeight(0, None, None, size, 0, size, size, "final", layers=tuple(layers))
    return Attribution(layers, [stage], [], [None] * len(image.config.history),
                       history_layers(image))


def attribute_build(result: BuildResult, events: Sequence[Event], store: Store | None
                    ) -> Attribution:
    """A build: stage weights from the engine's reports, the final layers by stage."""
    from cloche.engine import events as ev

    image = result.image
    reports = {r.index: r for r in result.stages}
    if not reports or any(r.config is None for r in reports.values()):
        return attribute_image(image, None)
    target = max(reports)
    names: dict[str, int] = {}
    skipped: dict[int, tuple[str | None, str]] = {}
    steps: dict[int, list[tuple[int, str, int]]] = {}
    for event in events:
        if isinstance(event, ev.StageSkipped):
            skipped[event.stage_index] = (event.stage_name, event.reason)
        elif isinstance(event, ev.StepStarted):
            ref = event.step
            steps.setdefault(ref.stage_index, []).append((ref.step, ref.text, ref.line))
    for r in reports.values():
        if r.name:
            names[r.name.lower()] = r.index
    for index, (name, _) in skipped.items():
        if name:
            names[name.lower()] = index

    def stage_of(ref: str) -> int | None:
        if ref.isdigit():
            return int(ref)
        return names.get(ref.lower())

    def label(index: int) -> str:
        r = reports.get(index)
        name = r.name if r is not None else skipped.get(index, (None, ""))[0]
        return name or f"stage {index}"

    # each stage's new layers: (size, instruction, line, from-stage-or-image)
    added: dict[int, list[tuple[int, str, int | None, str | None]]] = {}
    for index, r in reports.items():
        assert r.config is not None
        base_count = r.layers - r.new_layers
        entries = _layer_entries(r.config.history, r.layers)[base_count:]
        ordered = [s for _, s in sorted((n, (t, line)) for n, t, line in steps.get(index, []))]
        cursor = 0
        rows = []
        for k, entry in enumerate(entries):
            created = clean_created_by(entry.created_by if entry else None)
            keyword = created.split(" ", 1)[0].upper() if created else ""
            text, line = created, None
            for j in range(cursor, len(ordered)):
                step_text, step_line = ordered[j]
                if keyword and step_text.split(" ", 1)[0].upper() == keyword:
                    text, line, cursor = step_text, step_line, j + 1
                    break
            found = _FROM.search(text) if text.upper().startswith(("COPY", "ADD")) else None
            rows.append((r.layer_sizes[base_count + k] if base_count + k < len(r.layer_sizes)
                         else 0, text, line, found.group(1) if found else None))
        added[index] = rows

    chain = [target]
    while True:
        parent = reports[chain[-1]].base_stage
        if parent is None or parent not in reports or parent in chain:
            break
        chain.append(parent)
    chain.reverse()
    root = reports[chain[0]]
    root_base = root.layers - root.new_layers

    shipped: dict[int, int] = {}
    copies_to: dict[int, set[int]] = {}
    sources: dict[tuple[str, str, str], int] = {}
    for index, rows in added.items():
        for size, _, _, src in rows:
            if src is None:
                continue
            from_stage = stage_of(src)
            if from_stage is not None:
                copies_to.setdefault(from_stage, set()).add(index)
            if index in chain:
                if from_stage is not None:
                    shipped[from_stage] = shipped.get(from_stage, 0) + size
                    key = ("stage", label(from_stage), "COPY --from")
                else:
                    key = ("base", src, "COPY --from")
                sources[key] = sources.get(key, 0) + size
    base_name = root.base or "scratch"
    base_bytes = sum(root.layer_sizes[:root_base])
    source_list = [Source("base", base_name, "FROM", base_bytes)] if root_base else []
    source_list += [Source(k, n, h, s) for (k, n, h), s in sorted(sources.items())]

    # the final image's layers
    final: list[LayerWeight] = []
    entries = _layer_entries(image.config.history, len(image.layers))
    origins: list[tuple[str, str, int | None, str]] = []
    for k in range(root_base):
        h = entries[k] if k < len(entries) else None
        origins.append((f"base {base_name}", clean_created_by(h.created_by if h else None)
                        or f"FROM {base_name}", None, f"base {base_name}"))
    for index in chain:
        for _, text, line, src in added[index]:
            where = f"COPY --from={src}" if src else label(index)
            origins.append((label(index), text, line, where))
    if len(origins) == len(image.layers):
        for i, (layer, (stage, text, line, where)) in enumerate(zip(image.layers, origins)):
            final.append(LayerWeight(i, layer.size, text, line, stage, str(layer.digest), where))
    else:
        final = attribute_image(image, None).layers

    stages: list[StageWeight] = []
    for index in sorted(set(reports) | set(skipped)):
        report = reports.get(index)
        if report is None:
            name, reason = skipped[index]
            stages.append(StageWeight(index, name, None, 0, 0, 0, 0, "skipped",
                                      skipped=reason or "the target does not need it",
                                      copies_to=tuple(sorted(copies_to.get(index, ())))))
            continue
        r = report
        rows = added.get(index, [])
        add = sum(s for s, _, _, _ in rows)
        total = sum(r.layer_sizes)
        if index == target:
            ships, out = "final", add
        elif index in chain:
            ships, out = "base", add
        elif shipped.get(index):
            ships, out = "copied", shipped[index]
        else:
            ships, out = "no", 0
        base_layers = r.layers - r.new_layers
        layer_rows = tuple(LayerWeight(base_layers + k, s, t, line, label(index),
                                       source=f"COPY --from={src}" if src else None)
                           for k, (s, t, line, src) in enumerate(rows))
        stages.append(StageWeight(index, r.name, r.base or None, total, total - add, add, out,
                                  ships, base_stage=r.base_stage, layers=layer_rows,
                                  copies_to=tuple(sorted(copies_to.get(index, ())))))

    owners = _history_owners(image, [reports[i] for i in chain], label, base_name, root_base,
                             store)
    return Attribution(final, stages, source_list, owners, history_layers(image))


def _history_owners(image: Image, chain: list[StageReport], label: Callable[[int], str],
                    base_name: str,
                    root_base: int, store: Store | None) -> list[str | None]:
    """Which stage wrote each history entry of the final image (config entries included)."""
    history = image.config.history
    starts: list[tuple[int, str]] = []  # (first history index, owner), ascending
    root = chain[0]
    base_len = _base_history_length(root.base, store, root.config, root_base)
    starts.append((0, f"base {base_name}"))
    previous = base_len
    for r in chain:
        starts.append((previous, label(r.index)))
        previous = len(r.config.history) if r.config is not None else previous
    owners: list[str | None] = []
    for j in range(len(history)):
        owner = None
        for first, who in starts:
            if j >= first:
                owner = who
        owners.append(owner)
    return owners


def _base_history_length(base: str, store: Store | None, config: object,
                         root_base: int) -> int:
    """How many history entries the root stage's base image has: read from the stored base,
    else up to its last layer's entry."""
    from cloche.errors import ClocheError

    if store is not None and base and base.lower() != "scratch":
        try:
            return len(store.image(base).config.history)
        except (ClocheError, ValueError):  # not stored under that name: estimate below
            pass
    history = getattr(config, "history", ())
    seen = 0
    for j, h in enumerate(history):
        if seen == root_base:
            return j
        if not h.empty_layer:
            seen += 1
    return len(history) if seen == root_base else 0
