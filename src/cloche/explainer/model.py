"""What ``cloche explain`` reports, as values, and their JSON form (a stable schema).

A ``Report`` is the final image (digest, platform, size), its stages with their weights, the
final image's layers (each with the stage and instruction that made it), where the final
image's bytes came from (bases and ``COPY --from``), and the findings. ``to_json`` gives the
documented document (docs/explain.md); ``SCHEMA`` is its JSON Schema, and ``check_schema``
checks a document against it with the few keywords the schema uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KINDS", "MAX_PER_RULE", "SCHEMA", "SCHEMA_ID", "Finding", "LayerWeight", "Report",
           "Source", "StageWeight", "check_schema", "is_test_data"]

SCHEMA_ID = "https://cloche.dev/schemas/explain/v1"
KINDS = ("leak", "runtime", "waste")
MAX_PER_RULE = 50  # findings listed per rule (the biggest first); one more counts the rest


def is_test_data(path: str) -> bool:
    """A file of a test suite's data (``.../testdata/...``, as Go's sources ship: foreign
    binaries, example keys): the ELF and key checks leave them out."""
    return "/testdata/" in f"/{path}" or "/test/data/" in f"/{path}"


@dataclass(frozen=True)
class Finding:
    kind: str                      # leak | runtime | waste
    rule: str                      # e.g. secret-build-arg, interpreter-missing
    message: str
    path: str | None = None        # a file of the final image, "/..."
    stage: str | None = None       # the stage that put it there (name, or "stage N")
    instruction: str | None = None  # the instruction as written (or history created_by)
    line: int | None = None        # of the instruction in the Dockerfile
    size: int | None = None        # bytes concerned
    fix: str | None = None
    where: str | None = None       # config Env, history, labels, file

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "rule": self.rule, "message": self.message}
        for key in ("path", "stage", "instruction", "line", "size", "fix", "where"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True)
class LayerWeight:
    index: int                     # in its image (the stage's, or the final image's)
    size: int
    instruction: str               # the Dockerfile instruction, else history created_by
    line: int | None = None
    stage: str | None = None       # for a final image's layer: the stage (or base) it is from
    digest: str | None = None
    source: str | None = None      # "base IMAGE", "stage NAME", "COPY --from=NAME"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "size": self.size,
                               "instruction": self.instruction}
        for key in ("line", "stage", "digest", "source"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True)
class StageWeight:
    index: int
    name: str | None
    base: str | None               # FROM as written (expanded); None for an image
    size: int                      # base + added
    base_size: int
    added_size: int
    shipped_size: int              # bytes of this stage the final image holds
    ships: str                     # "final" (the target), "base" (the target is built on it),
    #                                "copied" (COPY --from), "no", "skipped"
    base_stage: int | None = None
    layers: tuple[LayerWeight, ...] = ()   # the layers this stage added
    skipped: str | None = None     # why the target skipped it
    copies_to: tuple[int, ...] = ()  # the stages that COPY --from (or mount) it

    @property
    def label(self) -> str:
        return self.name or f"stage {self.index}"

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "base": self.base,
                "base_stage": self.base_stage, "size": self.size, "base_size": self.base_size,
                "added_size": self.added_size, "shipped_size": self.shipped_size,
                "ships": self.ships, "skipped": self.skipped,
                "copies_to": list(self.copies_to),
                "layers": [layer.to_json() for layer in self.layers]}


@dataclass(frozen=True)
class Source:
    """Where some of the final image's bytes came from."""

    kind: str                      # "base" (an image the target is built FROM) or "stage"
    name: str                      # the image reference, or the stage's name
    how: str                       # "FROM" or "COPY --from"
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "how": self.how, "size": self.size}


@dataclass(frozen=True)
class Report:
    image: str                     # manifest digest
    image_id: str                  # config digest
    reference: str | None
    platform: str
    size: int                      # the layers' bytes
    stages: tuple[StageWeight, ...]
    layers: tuple[LayerWeight, ...]
    sources: tuple[Source, ...]
    findings: tuple[Finding, ...]
    entrypoint: tuple[str, ...] = ()
    user: str | None = None
    built: bool = False            # explained from a build (stages known), not an image alone
    extra: Mapping[str, Any] = field(default_factory=dict)

    def count(self, kind: str) -> int:
        return sum(1 for f in self.findings if f.kind == kind)

    def failed(self, fail_on: tuple[str, ...] | list[str]) -> bool:
        """Whether a finding of a kind in ``fail_on`` (``any``: every kind) was made."""
        kinds = set(KINDS) if "any" in fail_on else set(fail_on)
        return any(f.kind in kinds for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "$schema": SCHEMA_ID, "image": self.image, "image_id": self.image_id,
            "reference": self.reference, "platform": self.platform, "size": self.size,
            "built": self.built, "entrypoint": list(self.entrypoint), "user": self.user,
            "stages": [s.to_json() for s in self.stages],
            "layers": [layer.to_json() for layer in self.layers],
            "sources": [s.to_json() for s in self.sources],
            "findings": [f.to_json() for f in self.findings],
            "counts": {k: self.count(k) for k in KINDS},
        }


_INT = {"type": "integer", "minimum": 0}
_STR_OR_NULL = {"type": ["string", "null"]}
_LAYER = {
    "type": "object", "required": ["index", "size", "instruction"],
    "properties": {"index": _INT, "size": _INT, "instruction": {"type": "string"},
                   "line": _INT, "stage": {"type": "string"}, "source": {"type": "string"},
                   "digest": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}},
    "additionalProperties": False,
}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "cloche explain report",
    "type": "object",
    "required": ["image", "image_id", "platform", "size", "stages", "layers", "sources",
                 "findings", "counts"],
    "properties": {
        "$schema": {"type": "string"},
        "image": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
        "image_id": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
        "reference": _STR_OR_NULL,
        "platform": {"type": "string"},
        "size": _INT,
        "built": {"type": "boolean"},
        "entrypoint": {"type": "array", "items": {"type": "string"}},
        "user": _STR_OR_NULL,
        "stages": {"type": "array", "items": {
            "type": "object",
            "required": ["index", "name", "base", "size", "shipped_size"],
            "properties": {
                "index": _INT, "name": _STR_OR_NULL, "base": _STR_OR_NULL,
                "base_stage": {"type": ["integer", "null"]}, "size": _INT,
                "base_size": _INT, "added_size": _INT, "shipped_size": _INT,
                "ships": {"enum": ["final", "base", "copied", "no", "skipped"]},
                "skipped": _STR_OR_NULL,
                "copies_to": {"type": "array", "items": _INT},
                "layers": {"type": "array", "items": _LAYER},
            },
            "additionalProperties": False,
        }},
        "layers": {"type": "array", "items": _LAYER},
        "sources": {"type": "array", "items": {
            "type": "object", "required": ["kind", "name", "how", "size"],
            "properties": {"kind": {"enum": ["base", "stage"]}, "name": {"type": "string"},
                           "how": {"enum": ["FROM", "COPY --from"]}, "size": _INT},
            "additionalProperties": False,
        }},
        "findings": {"type": "array", "items": {
            "type": "object", "required": ["kind", "rule", "message"],
            "properties": {
                "kind": {"enum": list(KINDS)}, "rule": {"type": "string"},
                "message": {"type": "string"}, "path": {"type": "string"},
                "stage": {"type": "string"}, "instruction": {"type": "string"},
                "line": _INT, "size": _INT, "fix": {"type": "string"},
                "where": {"type": "string"},
            },
            "additionalProperties": False,
        }},
        "counts": {"type": "object", "required": list(KINDS),
                   "properties": {k: _INT for k in KINDS}, "additionalProperties": False},
    },
    "additionalProperties": False,
}

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "integer": (int,),
    "number": (int, float), "boolean": (bool,), "null": (type(None),)}


def check_schema(document: Any, schema: Mapping[str, Any] = SCHEMA) -> list[str]:
    """The places where ``document`` breaks ``schema`` (type, required, properties,
    additionalProperties, items, enum, minimum, pattern: the keywords SCHEMA uses); empty
    when it conforms. Iterative: the document's depth does not grow the stack."""
    import re

    errors: list[str] = []
    work: list[tuple[Any, Mapping[str, Any], str]] = [(document, schema, "$")]
    while work:
        value, rule, where = work.pop()
        types = rule.get("type")
        if types is not None:
            names = [types] if isinstance(types, str) else list(types)
            ok = any(isinstance(value, _TYPES[n]) and not (
                n in ("integer", "number") and isinstance(value, bool)) for n in names)
            if not ok:
                errors.append(f"{where}: {type(value).__name__} is not {'/'.join(names)}")
                continue
        if "enum" in rule and value not in rule["enum"]:
            errors.append(f"{where}: {value!r} is not one of {rule['enum']}")
        if "minimum" in rule and isinstance(value, (int, float)) and value < rule["minimum"]:
            errors.append(f"{where}: {value} < {rule['minimum']}")
        if "pattern" in rule and isinstance(value, str) and not re.search(rule["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {rule['pattern']}")
        if isinstance(value, dict):
            for key in rule.get("required", ()):
                if key not in value:
                    errors.append(f"{where}: {key!r} is missing")
            props = rule.get("properties", {})
            for key, item in value.items():
                if key in props:
                    work.append((item, props[key], f"{where}.{key}"))
                elif rule.get("additionalProperties") is False:
                    errors.append(f"{where}: unexpected key {key!r}")
        if isinstance(value, list) and "items" in rule:
            work.extend((item, rule["items"], f"{where}[{i}]") for i, item in enumerate(value))
    return errors
