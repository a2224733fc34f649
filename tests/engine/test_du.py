"""`cloche du` in the shape of `docker system df` (TYPE, TOTAL, ACTIVE, SIZE, RECLAIMABLE) and
`-v` (every image and build cache entry): its image sizes are `cloche images`' and what it
calls reclaimable is what `cloche prune` then frees."""

from __future__ import annotations

import json

from cloche import api
from cloche.ops.sizes import content_size
from tests.engine.conftest import BASE, Builder

TWO_STAGES = (f"FROM {BASE} AS tool\n"
              "RUN head -c 1000 /bin/busybox > /tool\n"
              f"FROM {BASE}\n"
              "RUN head -c 300000 /bin/busybox > /shared\n"  # one layer for every word
              "RUN --mount=type=cache,target=/var/cache/x echo {word} > /var/cache/x/seen"
              " && echo {word} > /{word}\n"
              "COPY --from=tool /tool /usr/bin/tool\n")


def _du(builder: Builder, *flags: str) -> dict:
    return json.loads(builder.cli("du", "--format", "json", *flags).stdout)


def _rows(usage: dict) -> dict[str, dict]:
    return {row["Type"]: row for row in usage["system_df"]}


def _sizes(builder: Builder) -> dict[str, int]:
    listing = builder.cli("images", "--format", "json").stdout
    return {f"{r['Repository']}:{r['Tag']}": r["Size"]
            for r in map(json.loads, listing.splitlines())}


def test_du_rows_agree_with_images_and_with_prune(builder: Builder) -> None:
    for word in ("a", "b"):
        builder.cli("build", "-t", f"du/{word}:1",
                    str(builder.context(TWO_STAGES.format(word=word))))
    loose = builder.dir / "loose"
    loose.mkdir()
    (loose / "data").write_bytes(b"x" * 50000)
    builder.cli("import", str(loose))  # a dangling image: inactive, its layer all its own
    sizes = _sizes(builder)
    base = sizes["busybox-test:1"]
    usage = _du(builder)
    for key in ("images", "image_bytes", "records", "cache_bytes", "step_snapshot_bytes"):
        assert key in usage  # the keys `du --format json` always had
    images, cache = _rows(usage)["Images"], _rows(usage)["Build Cache"]
    assert images["TotalCount"] == 4 and images["Active"] == 3
    # every layer once (the base's and the /shared one are in both images), each measured
    # as `cloche images` measures it
    store = builder.store
    layers = {layer.diff_id: layer for entry in store.list_images()
              for layer in store.image(str(entry.descriptor.digest)).layers}
    assert images["Size"] == sum(content_size(store, x) for x in layers.values())
    assert images["Size"] <= sizes["du/a:1"] + sizes["du/b:1"] - base - 300000 + 50000
    assert images["Reclaimable"] == sizes["<none>:<none>"] == 50000
    assert cache["Size"] == usage["cache_bytes"] and cache["TotalCount"] > usage["records"]

    verbose = _du(builder, "-v")
    rows = {r["Name"]: r for r in verbose["image_usage"]}
    a = rows["docker.io/du/a:1"]
    others = {x.diff_id for name in ("du/b:1", BASE) for x in store.image(name).layers}
    shared = sum(content_size(store, x) for x in store.image("du/a:1").layers
                 if x.diff_id in others)
    assert a["Size"] == sizes["du/a:1"] and a["SharedSize"] == shared >= base + 300000
    assert a["UniqueSize"] == sizes["du/a:1"] - shared > 0 and a["Active"]
    assert rows[None]["SharedSize"] == 0 and not rows[None]["Active"]
    kinds = {r["Type"] for r in verbose["cache_usage"]}
    assert kinds == {"regular", "exec.cachemount", "source.image"}
    assert len(verbose["cache_usage"]) == cache["TotalCount"]
    assert sum(1 for r in verbose["cache_usage"] if r["Active"]) == cache["Active"]

    builder.cli("rmi", "du/b:1")  # its steps' records: no image holds their layers now
    before = _rows(_du(builder))["Build Cache"]
    assert before["Reclaimable"] > 0 and before["Active"] < before["TotalCount"]
    report = api.prune(root=builder.root)
    assert report.bytes_freed == before["Reclaimable"]
    after = _du(builder)
    assert _rows(after)["Build Cache"]["Reclaimable"] == 0
    assert _rows(after)["Build Cache"]["Active"] == _rows(after)["Build Cache"]["TotalCount"]
    everything = api.prune(root=builder.root, everything=True)
    assert everything.bytes_freed == after["cache_bytes"] > 0
    assert _rows(_du(builder))["Build Cache"] == {"Type": "Build Cache", "TotalCount": 0,
                                                  "Active": 0, "Size": 0, "Reclaimable": 0}


def test_du_table_and_verbose_listing(builder: Builder) -> None:
    builder.cli("build", "-t", "du/t:1", str(builder.context(TWO_STAGES.format(word="t"))))
    table = builder.cli("du").stdout.splitlines()
    assert table[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert table[1].startswith("Images ") and table[2].startswith("Build Cache ")
    assert table[1].split()[1:3] == ["2", "2"] and table[1].endswith("(0%)")
    verbose = builder.cli("du", "-v").stdout
    assert verbose.startswith("Images space usage:\n")
    lines = verbose.splitlines()
    assert lines[2].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE",
                                "SHARED", "SIZE", "UNIQUE", "SIZE", "ACTIVE"]
    assert any(line.split()[:2] == ["du/t", "1"] for line in lines)
    assert "Build cache usage: " in verbose
    assert any(" regular " in line for line in lines)
    assert any(" exec.cachemount " in line for line in lines)
