"""The analysis: an image (and, for a build, its stage reports and events) -> a Report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cloche.explainer import leaks, runtime
from cloche.explainer.imagefs import ImageFS
from cloche.explainer.model import KINDS, MAX_PER_RULE, Finding, Report
from cloche.explainer.weight import Attribution, attribute_build, attribute_image

if TYPE_CHECKING:
    from cloche.engine.events import Event
    from cloche.engine.pipeline import BuildResult
    from cloche.oci.image import Image
    from cloche.store import Store

__all__ = ["explain_build", "explain_image"]


def explain_image(image: Image, *, store: Store | None = None,
                  reference: str | None = None) -> Report:
    """Explain an image alone: layers by history, the leak audit, will it run."""
    return _report(image, attribute_image(image, reference), store, reference, built=False)


def explain_build(result: BuildResult, events: Sequence[Event], *,
                  store: Store | None = None) -> Report:
    """Explain a build's result: ``events`` are the build's progress events (the stages it
    skipped, each step as written)."""
    attribution = attribute_build(result, events, store)
    reference = result.names[0] if result.names else None
    return _report(result.image, attribution, store, reference, built=True)


def _capped(findings: list[Finding]) -> list[Finding]:
    """At most MAX_PER_RULE findings of one rule (the biggest first), then one that counts
    the rest."""
    seen: dict[str, int] = {}
    kept: list[Finding] = []
    for f in findings:
        seen[f.rule] = seen.get(f.rule, 0) + 1
        if seen[f.rule] <= MAX_PER_RULE:
            kept.append(f)
        elif seen[f.rule] == MAX_PER_RULE + 1:
            more = sum(1 for g in findings if g.rule == f.rule) - MAX_PER_RULE
            total = sum(g.size or 0 for g in findings if g.rule == f.rule) - sum(
                g.size or 0 for g in kept if g.rule == f.rule)
            kept.append(Finding(f.kind, f.rule, f"... and {more} more {f.rule} findings"
                                + (f" ({total} bytes)" if total else ""),
                                size=total or None))
    return kept


def _report(image: Image, who: Attribution, store: Store | None, reference: str | None, *,
            built: bool) -> Report:
    scratch = store.tmp_dir if store is not None else None
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    fs = ImageFS.read(image.layers, scratch=scratch, secret_path=leaks.is_secret_path)
    findings: list[Finding] = leaks.audit(image, fs, who) + runtime.check(image, fs, who)
    order = {k: i for i, k in enumerate(("runtime", "leak", "waste"))}
    findings.sort(key=lambda f: (order.get(f.kind, len(KINDS)), -(f.size or 0)))
    findings = _capped(findings)
    config = image.config
    return Report(
        image=str(image.digest), image_id=str(image.config_digest), reference=reference,
        platform=str(config.platform), size=sum(layer.size for layer in image.layers),
        stages=tuple(who.stages), layers=tuple(who.layers), sources=tuple(who.sources),
        findings=tuple(findings), entrypoint=tuple(config.entrypoint or config.cmd or ()),
        user=config.user or None, built=built)
