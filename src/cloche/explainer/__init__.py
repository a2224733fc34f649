"""``cloche explain``: what a (multi-stage) build ships, what it leaked, whether it will run.

``explain_image(image, store=...)`` and ``explain_build(result, events, store=...)`` return a
``Report`` (model.py); ``render_text``/``render_html`` and ``Report.to_json`` present it. The
library's face, ``cloche.explain()`` (cloche/api.py), opens images and runs builds. This
package is ``explainer``, not ``explain``: a subpackage named like the face's function would
replace it as an attribute of ``cloche`` once imported (docs/architecture.md, "The build
engine"). It reads images through the OCI core and the layer reader, and the engine only
through its face.
"""

from __future__ import annotations

from cloche.explainer.core import explain_build, explain_image
from cloche.explainer.model import (
    KINDS,
    SCHEMA,
    Finding,
    LayerWeight,
    Report,
    Source,
    StageWeight,
)

__all__ = ["KINDS", "SCHEMA", "Finding", "LayerWeight", "Report", "Source", "StageWeight",
           "explain_build", "explain_image"]
