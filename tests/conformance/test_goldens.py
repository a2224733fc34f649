"""cloche builds what BuildKit v0.23.2 built: each golden of tests/conformance/goldens/.

For each golden, the case is built by cloche on the same base image (made by cloche from the
same fixed busybox rootfs, golden.make_base) and reduced to the same record: the entries of
each new layer, the config keys, the history after the base, the layer count, and the build
checks' warnings (``cloche.check``). Differences known and deliberate are listed per case in
known.json with the reason (docs/conformance.md). BuildKit is not needed here: the goldens are
recorded by record.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cloche import api
from cloche.engine.options import BuildOptions, OutputSpec
from cloche.errors import ClocheError
from tests.conformance import golden
from tests.fixtures.services import require_root

GOLDEN_FILES = sorted(golden.GOLDENS.glob("*.json"))


@pytest.fixture(scope="module")
def conformance_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, golden.Base]:
    """A store template holding the base image, and what the record needs to know of it."""
    require_root()
    work = tmp_path_factory.mktemp("conformance")
    base = golden.make_base(work / "store", work)
    return work / "store", base


def cloche_record(case: golden.Case, base: golden.Base, store: Path, work: Path) -> dict:
    """The record of cloche's build of ``case``, with the same keys as the golden's."""
    build_args = {"BASE": golden.BASE_NAME, **case.build_args}
    out: dict = {}
    tar = work / "image.tar"
    context = case.context(work)
    options = BuildOptions(context=str(context), root=store, build_args=build_args,
                           target=case.target, no_cache=True,
                           outputs=(OutputSpec("oci", dest=str(tar)),))
    try:
        api.build(options)
    except ClocheError as err:
        out["error"] = {"line": getattr(err, "line", None) or 0, "message": str(err)}
    else:
        out["image"] = golden.image_record(tar, base)
    try:
        report = api.check(BuildOptions(context=str(context), root=store,
                                        build_args=build_args, target=case.target))
    except ClocheError:
        out["warnings"] = []  # BuildKit's lint of a Dockerfile it rejects has no warnings
    else:
        out["warnings"] = golden.sort_warnings(
            [{"rule": w.rule, "line": w.line, "message": w.message} for w in report.warnings])
    return out


def test_every_case_has_a_golden() -> None:
    """A case added without recording its golden (record.py) is not compared at all."""
    missing = [c.name for c in golden.cases() if not c.golden.exists()]
    assert not missing, f"cases without a golden (record them): {missing}"


def test_known_differences_name_goldens_and_give_reasons() -> None:
    names = {p.stem for p in GOLDEN_FILES}
    for case, entries in golden.load_known().items():
        assert case in names, f"known.json: no golden {case}"
        for entry in entries:
            assert entry.get("reason") and entry.get("match"), f"known.json {case}: {entry}"


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_cloche_builds_what_buildkit_built(path: Path, conformance_base: tuple[Path, golden.Base],
                                           tmp_path: Path) -> None:
    template, base = conformance_base
    recorded = json.loads(path.read_text())
    case = golden.cases([recorded["case"]])[0]
    assert recorded["case_sha256"] == case.digest, \
        f"{case.source} changed after its golden was recorded: python -m tests.conformance.record {case.name}"
    store = tmp_path / "store"
    shutil.copytree(template, store, symlinks=True)
    ours = cloche_record(case, base, store, tmp_path)

    problems = golden.diff_records(ours, recorded)
    left, stale = golden.apply_known(problems, golden.load_known().get(case.name, []))
    assert not stale, f"known.json lists differences of {case.name} that are gone: {stale}"
    assert not left, f"{case.name}: cloche differs from BuildKit {recorded['buildkit']}:\n" \
        + "\n".join(left)


# buildctl's print of the lint subrequest's result.txt (BuildKit v0.23.2), as record.py reads it.
_LINT_TEXT = """
WARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/
'as' and 'FROM' keywords' casing do not match
Dockerfile:3
--------------------
   1 |     ARG BASE
   3 | >>> FROM ${BASE} as Builder
--------------------

WARNING: NoEmptyContinuation - https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/
Empty continuation line
Dockerfile:13
--------------------
  13 | >>>     && echo continued >> /x
--------------------
"""


def test_lint_text_is_read_as_rule_line_message() -> None:
    assert golden.parse_lint(_LINT_TEXT) == [
        {"rule": "FromAsCasing", "line": 3,
         "message": "'as' and 'FROM' keywords' casing do not match"},
        {"rule": "NoEmptyContinuation", "line": 13, "message": "Empty continuation line"}]


def test_differences_are_reported_and_known_ones_must_still_match() -> None:
    entry = {"type": "file", "mode": "0644", "uid": 0, "gid": 0, "size": 1, "sha256": "x"}
    image = {"layer_count": 2, "base_layers": 1, "config": {}, "history": [
        {"created_by": "RUN x", "empty_layer": False}], "layers": [{"/f": entry}]}
    changed = json.loads(json.dumps(image))
    changed["layers"][0]["/f"]["mode"] = "0600"
    changed["layers"][0]["/g"] = entry
    problems = golden.diff_records({"image": changed, "warnings": []},
                                   {"image": image, "warnings": []})
    assert problems == [f"layer 0 /f: cloche {golden._entry(changed['layers'][0]['/f'])} "
                        f"buildkit {golden._entry(entry)}",
                        f"layer 0 /g: extra in cloche {golden._entry(entry)}"]
    left, stale = golden.apply_known(problems, [{"match": "^layer 0 /g: extra", "reason": "r"},
                                                {"match": "^history", "reason": "gone"}])
    assert left == problems[:1] and stale == ["^history"]
