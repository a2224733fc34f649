"""``--progress=rawjson``: the build's progress as BuildKit's status stream, one JSON object a line.

buildx writes each ``SolveStatus`` it receives as one line of JSON on stderr (BuildKit's
progressui raw JSON display): ``{"vertexes": [...], "statuses": [...], "logs": [...],
"warnings": [...]}``, each list and each field there only when set, timestamps in RFC 3339
with nanoseconds, byte fields (a log's ``data``, a warning's ``short`` and ``detail``) in
base64. This renderer writes the same shape from cloche's events:

* a vertex per step the plain renderer shows, named by its title (``[build 2/4] RUN ...``);
  its digest is a stable ``sha256:`` of the step's stage and title, its ``inputs`` the step
  before it in the stage (or the last step of the stage it starts from). A step sends its
  vertex when it starts, and again with ``completed`` (and ``cached`` or ``error``) when done;
  a step stopped because another failed has BuildKit's ``context canceled`` error;
* a log per line of a step's output (stream 1), under the step's vertex;
* a status per blob a pull, push or export moves (``BlobProgress``), whose id is the blob's
  digest: under the ``FROM`` vertex of the step that pulled it once that is known (a base
  image is pulled before its step's number is: the last status of each of its blobs is sent
  again under the vertex when the step is resolved), with no vertex before or otherwise (a
  push's statuses are named ``pushing``);
* a vertex per output written (``exporting to oci image format``...; no inputs, as BuildKit's
  exporter vertex), its blobs' statuses under it (an archive sent whole: ``sending tarball``);
* a warning per build warning (level 1, as BuildKit's Dockerfile checks send them; the
  check's location as ``sourceInfo`` and ``range``, without the Dockerfile's bytes).

Config-only steps send nothing (BuildKit makes no vertex of them) unless they fail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import threading
import time
from typing import Any, TextIO

from cloche import events as transfer
from cloche.engine import events as ev

# what Go's encoding/json escapes besides what JSON needs (buildx's encoder escapes HTML)
_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                             "\u2028": "\\u2028", "\u2029": "\\u2029"})


def timestamp(ns: int) -> str:
    """``ns`` (nanoseconds since the epoch) as Go writes a UTC time: RFC 3339, the fraction of
    the second to nanoseconds without its trailing zeros."""
    seconds, frac = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


def vertex_digest(step: ev.StepRef) -> str:
    """A stable digest for a step's vertex: the same Dockerfile gives the same digests."""
    key = json.dumps(["cloche-vertex", step.stage_index, step.stage_label, step.step,
                      step.title], ensure_ascii=False)
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8", "surrogateescape")).decode("ascii")


def _reference_key(text: str) -> str:
    """A reference as the registry client names it (``busybox`` and
    ``docker.io/library/busybox:latest`` are one image)."""
    from cloche.errors import ClocheError
    from cloche.oci.reference import Reference

    try:
        return str(Reference.parse(text.strip()))
    except ClocheError:
        return text.strip()


class _Vertex:
    __slots__ = ("digest", "inputs", "name", "started")

    def __init__(self, digest: str, inputs: list[str], name: str, started: int) -> None:
        self.digest, self.inputs, self.name, self.started = digest, inputs, name, started

    def doc(self, *, completed: int | None = None, cached: bool = False,
            error: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {"digest": self.digest}
        if self.inputs:
            out["inputs"] = list(self.inputs)
        out["name"] = self.name
        out["started"] = timestamp(self.started)
        if completed is not None:
            out["completed"] = timestamp(completed)
        if cached:
            out["cached"] = True
        if error:
            out["error"] = error
        return out


class RawJSONRenderer:
    """Writes one ``SolveStatus`` line of JSON per event that BuildKit would report."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._vertexes: dict[tuple[int, int], _Vertex] = {}
        self._stage_last: dict[int, str] = {}      # stage index -> its last vertex's digest
        self._stage_names: dict[str, int] = {}     # stage name -> index
        self._stage_input: dict[int, str] = {}     # stage index -> the vertex it starts from
        self._pulled_by: dict[str, str] = {}       # reference -> the FROM vertex that pulled it
        self._held: dict[str, dict[str, dict[str, Any]]] = {}  # reference -> blob -> status
        self._export: _Vertex | None = None        # the output being written

    def __call__(self, event: ev.Event) -> None:
        with self._lock:
            doc = self._solve_status(event, time.time_ns())
            if doc:
                line = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
                line = line.encode("utf-8", "replace").decode("utf-8")  # no lone surrogate
                self.stream.write(line.translate(_GO_ESCAPES) + "\n")
                self.stream.flush()

    def _solve_status(self, event: ev.Event, now: int) -> dict[str, Any] | None:
        if isinstance(event, ev.StageStarted):
            if event.stage_name:
                self._stage_names[event.stage_name.lower()] = event.stage_index
            parent = self._stage_names.get(event.base.lower())
            if parent is not None and parent in self._stage_last:
                self._stage_input[event.stage_index] = self._stage_last[parent]
            return None
        if isinstance(event, ev.BaseResolved):
            vertex = self._vertex(event.step, now - int(event.seconds * 1e9))
            doc: dict[str, Any] = {"vertexes": [vertex.doc(completed=now, cached=event.cached)]}
            reference = _reference_key(event.step.text.partition(" ")[2])
            self._pulled_by.setdefault(reference, vertex.digest)
            held = self._held.pop(reference, {})
            if held:  # the blobs pulled before the step was known, now under its vertex
                doc["statuses"] = [_with_vertex(s, vertex.digest) for s in held.values()]
            return doc
        if isinstance(event, ev.StepStarted):
            if not event.step.shown:
                return None
            return {"vertexes": [self._vertex(event.step, now).doc()]}
        if isinstance(event, ev.StepFinished):
            if not event.step.shown:
                return None
            vertex = self._vertex(event.step, now - int(event.seconds * 1e9))
            return {"vertexes": [vertex.doc(completed=now, cached=event.cached)]}
        if isinstance(event, ev.StepFailed):
            vertex = self._vertex(event.step, now - int(event.seconds * 1e9))
            # a step stopped because another failed: BuildKit's cancelled vertex
            error = "context canceled" if event.message == "cancelled" else event.message
            return {"vertexes": [vertex.doc(completed=now, error=error or "failed")]}
        if isinstance(event, ev.StepOutput):
            step = self._vertexes.get((event.step.stage_index, event.step.step))
            log: dict[str, Any] = {}
            if step is not None:
                log["vertex"] = step.digest
            log.update(stream=1, data=_b64(event.text + "\n"), timestamp=timestamp(now))
            return {"logs": [log]}
        if isinstance(event, ev.BuildWarning):
            return {"warnings": [_warning(event)]}
        if isinstance(event, transfer.BlobProgress):
            return self._blob(event, now)
        if isinstance(event, ev.ExportStarted):  # BuildKit's exporter vertex (no inputs)
            self._export = self._export_vertex(event.name)
            return {"vertexes": [self._export.doc()]}
        if isinstance(event, ev.ExportFinished):
            vertex = self._export or self._export_vertex(event.name)
            self._export = None
            vertex.started = min(vertex.started, now - int(event.seconds * 1e9))
            return {"vertexes": [vertex.doc(completed=now)]}
        return None

    def _vertex(self, step: ev.StepRef, started: int) -> _Vertex:
        """The step's vertex, made when first seen (chained to the stage's previous one)."""
        key = (step.stage_index, step.step)
        vertex = self._vertexes.get(key)
        if vertex is None:
            before = self._stage_last.get(step.stage_index,
                                          self._stage_input.get(step.stage_index))
            name = step.title if step.shown else step.text
            vertex = _Vertex(vertex_digest(step), [before] if before else [], name, started)
            self._vertexes[key] = vertex
            if step.shown:
                self._stage_last[step.stage_index] = vertex.digest
        return vertex

    def _export_vertex(self, name: str) -> _Vertex:
        digest = "sha256:" + hashlib.sha256(
            json.dumps(["cloche-export", name]).encode()).hexdigest()
        return _Vertex(digest, [], name, time.time_ns())

    def _blob(self, event: transfer.BlobProgress, now: int) -> dict[str, Any]:
        tarball = event.descriptor.media_type == ev.TARBALL  # an archive sent whole
        status: dict[str, Any] = {"id": "sending tarball" if tarball
                                  else str(event.descriptor.digest)}
        key = _reference_key(event.reference)
        vertex = (self._pulled_by.get(key) if event.action == "pulling"
                  else self._export.digest if self._export is not None else None)
        if event.action == "pushing":
            status["name"] = event.action
        if event.total:
            status["total"] = event.total
        status["current"] = event.done
        status["timestamp"] = timestamp(now)
        # the transfer's start, from the monotonic clock it was taken on
        started = now - max(0, int((time.monotonic() - event.started) * 1e9))
        status["started"] = timestamp(started)
        if event.total is not None and event.done >= event.total:
            status["completed"] = timestamp(now)
        if vertex is not None:
            return {"statuses": [_with_vertex(status, vertex)]}
        if event.action == "pulling":  # its FROM step is not known yet: sent again then
            self._held.setdefault(key, {})[status["id"]] = status
        return {"statuses": [status]}


def _with_vertex(status: dict[str, Any], vertex: str) -> dict[str, Any]:
    """``status`` with its vertex, in BuildKit's field order (id, vertex, name...)."""
    out = {"id": status["id"], "vertex": vertex}
    out.update((k, v) for k, v in status.items() if k != "id")
    return out


def _warning(event: ev.BuildWarning) -> dict[str, Any]:
    out: dict[str, Any] = {"level": 1, "short": _b64(event.short)}
    if event.url:
        out["url"] = event.url
    if event.rule and event.file:
        out["sourceInfo"] = {"filename": event.file, "language": "Dockerfile"}
    if event.line > 0:
        end = max(event.end_line, event.line)
        out["range"] = [{"start": {"line": event.line}, "end": {"line": end}}]
    return out
