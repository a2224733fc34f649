"""A build cache shared through a registry or a folder (--cache-to/--cache-from, docs/cache.md).

Two stores stand for two machines sharing one loopback registry: machine A builds a
multi-stage Dockerfile whose RUN steps write the time (so a step that runs again is seen in
the image), and exports its cache; machine B, whose store starts empty (its base image comes
from the registry too), builds the same context importing it: no step runs, and B's image
digest is A's. A changed context file makes only the steps after it run. A tampered cache
is a miss, never a wrong image.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from cloche.compression import SNIFF_SIZE, Compression, detect_compression, open_decompressed
from cloche.engine import events as ev
from cloche.engine.options import parse_output
from cloche.engine.remote_cache import CACHE_CONFIG
from cloche.errors import ImageNotFoundError
from cloche.oci.digest import Digest
from cloche.registry.push import push_stored
from cloche.store import Store
from tests.engine.conftest import BASE, Builder, rootfs
from tests.fixtures.services import require_root

pytestmark = [pytest.mark.root, pytest.mark.registry]


@pytest.fixture(scope="module")
def remote_base(registry, template_store: Path) -> str:
    ref = f"{registry.host}/cache/busybox:1"
    push_stored(Store.open(template_store), BASE, ref)
    return ref


UUID = "cat /proc/sys/kernel/random/uuid"  # a RUN that runs again writes another one
RUN_BUILT = f"RUN {UUID} > /built"
RUN_OUT = f"RUN cat /src.txt /built > /out && {UUID} >> /out"
RUN_STAMP = f"RUN {UUID} > /stamp && cat /app.txt >> /stamp"


def dockerfile(base: str) -> str:
    return (f"FROM {base} AS builder\n"
            f"{RUN_BUILT}\n"
            "COPY src.txt /src.txt\n"
            f"{RUN_OUT}\n"
            f"FROM {base}\n"
            "COPY --from=builder /out /out\n"
            "COPY app.txt /app.txt\n"
            f"{RUN_STAMP}\n")


FILES = {"src.txt": "source\n", "app.txt": "app 1\n"}


def machine(tmp_path: Path, name: str) -> Builder:
    """A builder whose store is empty: every base image comes from the registry."""
    require_root()
    (tmp_path / name).mkdir()
    (tmp_path / name / "store").mkdir()
    return Builder(tmp_path / name, tmp_path / name / "store")


def finished(b: Builder) -> dict[str, ev.StepFinished]:
    return {f"{e.step.stage_label} {e.step.text}": e for e in b.recorder.of(ev.StepFinished)}


def ran(b: Builder) -> list[str]:
    """The filesystem steps that ran (not cached)."""
    return sorted(k for k, e in finished(b).items() if not e.cached
                  and e.step.text.split()[0] in ("RUN", "COPY", "ADD", "WORKDIR"))


ALL_FS = sorted(["builder COPY src.txt /src.txt", f"builder {RUN_OUT}", f"builder {RUN_BUILT}",
                 "stage-1 COPY --from=builder /out /out", "stage-1 COPY app.txt /app.txt",
                 f"stage-1 {RUN_STAMP}"])


def a_then_b(tmp_path: Path, base: str, cache_to: str, cache_from: str,
             **more: object) -> tuple[Builder, Builder, object, object]:
    a, b = machine(tmp_path, "a"), machine(tmp_path, "b")
    first = a.build(dockerfile(base), FILES, cache_to=cache_to, **more)
    assert ran(a) == ALL_FS
    second = b.build(dockerfile(base), FILES, cache_from=cache_from,
                     **({"cache_to": cache_to} if "inline" in cache_to else {}))
    return a, b, first, second


def test_registry_max_second_machine_runs_nothing(tmp_path: Path, registry, remote_base: str
                                                  ) -> None:
    ref = f"{registry.host}/cache/app:max"
    meta = tmp_path / "meta.json"
    a, b, first, second = a_then_b(tmp_path, remote_base, f"type=registry,ref={ref},mode=max",
                                   f"type=registry,ref={ref}")
    assert ran(b) == []
    steps = finished(b)
    assert all(steps[k].imported == ref for k in ALL_FS)
    assert second.digest == first.digest  # type: ignore[attr-defined]
    out = rootfs(second.image, tmp_path / "root-b")  # type: ignore[attr-defined]
    assert (out / "app.txt").read_text() == "app 1\n"
    assert (out / "out").read_text().startswith("source\n")

    # one context file changes on B: only the steps from it on run
    third = b.build(dockerfile(remote_base), {**FILES, "app.txt": "app 2\n"},
                    cache_from=f"type=registry,ref={ref}", metadata_file=str(meta))
    assert ran(b) == ["stage-1 COPY app.txt /app.txt",
                      f"stage-1 {RUN_STAMP}"]
    assert (rootfs(third.image, tmp_path / "root-b2") / "stamp").read_text().endswith("app 2\n")
    doc = json.loads(meta.read_text())
    # the builder's steps again: never needed, their layers were never fetched (lazy)
    assert doc["cloche.cache.imported"] == [{"source": ref, "steps": 3}]


def test_registry_min_imports_the_target_stage_only(tmp_path: Path, registry,
                                                    remote_base: str) -> None:
    ref = f"{registry.host}/cache/app:min"
    meta = tmp_path / "meta.json"
    a, b, first, second = a_then_b(tmp_path, remote_base,
                                   f"type=registry,ref={ref},mode=min,image-manifest=true",
                                   ref, metadata_file=str(meta))
    exported = json.loads(meta.read_text())["cloche.cache.exported"]
    assert exported[0]["mode"] == "min" and exported[0]["steps"] == 3
    # the builder stage's steps were not exported: they run on B; the target's are imported
    # (COPY --from's key is the builder's key, not its output), so the image is A's
    assert ran(b) == [k for k in ALL_FS if k.startswith("builder")]
    assert all(finished(b)[k].imported == ref for k in ALL_FS if k.startswith("stage-1"))
    assert second.digest == first.digest  # type: ignore[attr-defined]


def test_registry_artifact_is_an_index_of_layers_and_config(tmp_path: Path, registry,
                                                            remote_base: str) -> None:
    from cloche.oci.reference import Reference
    from cloche.registry.client import RegistryClient
    from cloche.registry.config import Endpoint

    ref = f"{registry.host}/cache/app:shape"
    a = machine(tmp_path, "a")
    a.build(dockerfile(remote_base), FILES, cache_to=f"type=registry,ref={ref},mode=max")
    with RegistryClient(credentials=lambda host: None) as client:
        ep = Endpoint(Reference.parse(ref), "http", False)
        top = json.loads(client.get_manifest(ep).data)
        assert top["mediaType"] == "application/vnd.oci.image.index.v1+json"
        configs = [m for m in top["manifests"] if m["mediaType"] == CACHE_CONFIG]
        assert len(configs) == 1
        parts: list[bytes] = []
        client.fetch_blob(ep, Digest.parse(configs[0]["digest"]), configs[0]["size"],
                          parts.append)
    config = json.loads(b"".join(parts))
    assert config["format"] == "cloche.cache.v1"
    layers = {m["digest"] for m in top["manifests"] if m["mediaType"] != CACHE_CONFIG}
    assert all(m["mediaType"].endswith("tar+zstd") for m in top["manifests"]  # the default
               if m["mediaType"] != CACHE_CONFIG)
    for record in config["records"]:
        assert set(record) == {"key", "parent", "created_by", "created", "layer"}
        if record["layer"] is not None:
            assert record["layer"]["digest"] in layers


def test_local_cache_folder_and_a_tampered_blob(tmp_path: Path, remote_base: str) -> None:
    cache = tmp_path / "cache"
    a, b, first, second = a_then_b(tmp_path, remote_base, f"type=local,dest={cache},mode=max",
                                   f"type=local,src={cache}")
    assert (cache / "index.json").is_file() and (cache / "oci-layout").is_file()
    assert ran(b) == []
    assert second.digest == first.digest  # type: ignore[attr-defined]

    # a third machine, from a folder whose layer of the target's last RUN was replaced:
    # that step is a miss and runs; the image holds what the step wrote there
    c = machine(tmp_path, "c")
    stamp_layer = first.image.layers[-1]  # type: ignore[attr-defined]
    index = json.loads((cache / "index.json").read_text())
    top = json.loads((cache / "blobs" / "sha256" /
                      index["manifests"][0]["digest"].split(":")[1]).read_text())
    config_desc = next(m for m in top["manifests"] if m["mediaType"] == CACHE_CONFIG)
    config = json.loads((cache / "blobs" / "sha256" / config_desc["digest"][7:]).read_text())
    target = next(r for r in config["records"]
                  if r["layer"] and r["layer"]["diff_id"] == str(stamp_layer.diff_id))
    blob = cache / "blobs" / "sha256" / target["layer"]["digest"][7:]
    blob.write_bytes(b"\x00" * blob.stat().st_size)
    third = c.build(dockerfile(remote_base), FILES, cache_from=f"type=local,src={cache}")
    assert ran(c) == [f"stage-1 {RUN_STAMP}"]
    assert any("does not verify" in w.message for w in c.recorder.of(ev.BuildWarning))
    stamp = (rootfs(third.image, tmp_path / "root-c") / "stamp").read_text()
    assert stamp.endswith("app 1\n") and third.image.layers[-1].diff_id != stamp_layer.diff_id


def test_local_cache_entry_with_a_wrong_diff_id_is_a_miss(tmp_path: Path,
                                                           remote_base: str) -> None:
    cache = tmp_path / "cache"
    a = machine(tmp_path, "a")
    first = a.build(dockerfile(remote_base), FILES, cache_to=f"type=local,dest={cache}")
    blobs = cache / "blobs" / "sha256"
    index = json.loads((cache / "index.json").read_text())
    top_digest = index["manifests"][0]["digest"][7:]
    top = json.loads((blobs / top_digest).read_text())
    config_desc = next(m for m in top["manifests"] if m["mediaType"] == CACHE_CONFIG)
    config = json.loads((blobs / config_desc["digest"][7:]).read_text())
    wrong = "sha256:" + "0" * 64
    for record in config["records"]:
        if record["layer"] and record["layer"]["diff_id"] == str(first.image.layers[-2].diff_id):
            record["layer"]["diff_id"] = wrong  # the COPY app.txt layer
    data = json.dumps(config).encode()
    digest = Digest.from_bytes(data)
    (blobs / digest.hex).write_bytes(data)
    config_desc.update(digest=str(digest), size=len(data))
    top_data = json.dumps(top).encode()
    top_new = Digest.from_bytes(top_data)
    (blobs / top_new.hex).write_bytes(top_data)
    index["manifests"][0].update(digest=str(top_new), size=len(top_data))
    (cache / "index.json").write_text(json.dumps(index))

    b = machine(tmp_path, "b")
    second = b.build(dockerfile(remote_base), FILES, cache_from=f"type=local,src={cache}")
    # the entry is refused as it is written (its tar is not the diff id it names): COPY runs,
    # and the RUN after it, chained to COPY's key, is imported as before (mode=min: the
    # builder stage was not exported and runs)
    assert ran(b) == [k for k in ALL_FS if k.startswith("builder")] + [
        "stage-1 COPY app.txt /app.txt"]
    assert finished(b)[f"stage-1 {RUN_STAMP}"].imported
    assert str(second.image.layers[-2].diff_id) != wrong  # the layer B wrote itself
    assert second.image.layers[-1].diff_id == first.image.layers[-1].diff_id
    out = rootfs(second.image, tmp_path / "root-b")
    assert (out / "app.txt").read_text() == "app 1\n"
    assert (out / "stamp").read_text() == (rootfs(first.image, tmp_path / "root-a")
                                           / "stamp").read_text()


def test_inline_cache_in_the_pushed_image(tmp_path: Path, registry, remote_base: str) -> None:
    ref = f"{registry.host}/cache/inline:1"
    a, b, first, second = a_then_b(tmp_path, remote_base, "type=inline", ref,
                                   outputs=(parse_output(f"type=registry,name={ref}"),))
    assert "cloche.cache.v1" in first.image.config.extra  # type: ignore[attr-defined]
    # inline is mode=min: the builder's steps run on B, the image's are imported
    assert ran(b) == [k for k in ALL_FS if k.startswith("builder")]
    assert all(finished(b)[k].imported == ref for k in ALL_FS if k.startswith("stage-1"))
    assert second.digest == first.digest  # type: ignore[attr-defined]


def test_flags_are_checked(tmp_path: Path) -> None:
    from cloche.engine.options import BuildOptions
    from cloche.errors import ConfigError

    for bad in ("type=registry", "type=local", "type=inline,mode=max", "type=nope,ref=x",
                "type=registry,ref=a/b,mode=all", "type=registry,ref=a/b,color=1"):
        with pytest.raises(ConfigError):
            BuildOptions(cache_to=(bad,))  # type: ignore[arg-type]
    opts = BuildOptions(cache_from=("reg.example/app:cache", "type=local,src=/tmp/x"))
    assert [s.type for s in opts.cache_from] == ["registry", "local"]


def test_unreachable_cache_source_is_a_warning(tmp_path: Path, remote_base: str) -> None:
    b = machine(tmp_path, "b")
    b.build(dockerfile(remote_base), FILES, cache_from=f"type=local,src={tmp_path / 'none'}")
    assert ran(b) == ALL_FS
    assert any("cache import" in w.message for w in b.recorder.of(ev.BuildWarning))


def test_cli_plain_progress_and_no_secret_in_the_cache(tmp_path: Path, remote_base: str
                                                       ) -> None:
    """`cloche build --cache-to/--cache-from`: B's plain progress says where each step came
    from, and the cache folder holds no byte of a secret a RUN step read."""
    value = "s3cr3t-value-that-must-not-leak"
    secret = tmp_path / "token"
    secret.write_text(value)
    cache = tmp_path / "cache"
    text = (f"FROM {remote_base}\n"
            "RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /len\n"
            f"RUN {UUID} > /stamp\n")
    a, b = machine(tmp_path, "a"), machine(tmp_path, "b")
    for who, flag in ((a, f"--cache-to=type=local,dest={cache},mode=max"),
                      (b, f"--cache-from=type=local,src={cache}")):
        ctx = who.context(text)
        done = who.cli("build", "--progress", "plain", "--secret", f"id=token,src={secret}",
                       flag, "--iidfile", str(who.dir / "iid"), str(ctx))
    assert (a.dir / "iid").read_text() == (b.dir / "iid").read_text()
    assert done.stderr.count(f"CACHED (imported from {cache})") == 2, done.stderr
    for path in cache.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert value.encode() not in data, path
            if detect_compression(data[:SNIFF_SIZE]) is not Compression.NONE:  # a layer
                with open_decompressed(io.BytesIO(data)) as plain:
                    assert value.encode() not in plain.read(), path


def test_layers_of_other_stages_are_fetched_only_when_needed(tmp_path: Path, registry,
                                                             remote_base: str) -> None:
    """mode=max, lazily: B fetches no layer of the builder stage while the target's steps
    hit; when a builder step misses, the imported layer under it is fetched and unpacked."""
    ref = f"{registry.host}/cache/app:lazy"
    a, b, first, second = a_then_b(tmp_path, remote_base, f"type=registry,ref={ref},mode=max",
                                   ref)
    assert ran(b) == []
    builder = next(s for s in first.stages if s.name == "builder")  # type: ignore[attr-defined]
    own = [Digest.parse(d) for d in builder.layer_diff_ids[1:]]  # the base's is not the cache's
    assert len(own) == 3
    # (the last one, a tar of /out alone, is also the target's COPY --from layer)
    shipped = {layer.diff_id for layer in first.image.layers}  # type: ignore[attr-defined]
    assert [b.store.blobs.exists(d) for d in own if d not in shipped] == [False, False]
    target = first.image.layers[-3:]  # type: ignore[attr-defined]
    assert all(b.store.blobs.exists(layer.diff_id) for layer in target)

    c = machine(tmp_path, "c")
    third = c.build(dockerfile(remote_base), {**FILES, "src.txt": "changed\n"}, cache_from=ref)
    assert ran(c) == [k for k in ALL_FS if k != f"builder {RUN_BUILT}"]
    assert c.store.blobs.exists(own[0])  # fetched for the COPY stacked on it
    out = (rootfs(third.image, tmp_path / "root-c") / "out").read_text()
    built = (rootfs(first.image, tmp_path / "root-a") / "out").read_text().split("\n")[1]
    assert out.split("\n")[:2] == ["changed", built]  # A's /built, under C's new source


def _step_dirs(b: Builder) -> set[Path]:
    steps = b.root / "snapshots" / "steps"
    return {p for p in steps.iterdir() if p.is_dir()} if steps.is_dir() else set()


def _named_step_dirs(b: Builder) -> set[Path]:
    named = set()
    for record in (b.root / "cache" / "steps").glob("*/*.json"):
        doc = json.loads(record.read_text())
        if doc.get("snapshot"):
            named.add((b.root / doc["snapshot"]).parent)
    return named


def test_prune_reclaims_imports_never_fetched_and_rewritten_layers(tmp_path: Path,
                                                                  remote_base: str) -> None:
    """Issue 12: the builder stage's steps, imported lazily and never fetched, leave step
    directories that only a marker fills (each later import makes new ones), and an archive
    output with rewrite-timestamp leaves rewritten layers no image holds. ``cloche du`` counts
    them; ``cloche prune`` (even one that keeps recent cache) removes them; the cache hits
    that remain valid stay hits, and the next builds give the same images."""
    from cloche.engine.workspace import PENDING_LAYER

    cache = tmp_path / "cache"
    a, b, first, second = a_then_b(tmp_path, remote_base, f"type=local,dest={cache},mode=max",
                                   f"type=local,src={cache}")
    assert ran(b) == []
    epoch = {"SOURCE_DATE_EPOCH": "1700000000"}

    def build_b(archive: str) -> object:
        return b.build(dockerfile(remote_base), FILES, cache_from=f"type=local,src={cache}",
                       tags=("app:1",), build_args=epoch, outputs=(parse_output(
                           f"type=oci,dest={tmp_path / archive},rewrite-timestamp=true"),))

    before = build_b("b1.tar")  # imports the builder's steps again: new directories
    usage = json.loads(b.cli("du", "--format", "json").stdout)
    dirs = _step_dirs(b)
    assert usage["step_snapshots"] == len(dirs) > usage["records"]
    orphans = dirs - _named_step_dirs(b)  # the first imports' directories
    assert orphans
    never_fetched = [d for d in _named_step_dirs(b) if (d / PENDING_LAYER).exists()
                     and not b.store.blobs.exists(Digest.parse((d / PENDING_LAYER).read_text()))]
    assert len(never_fetched) == 2  # RUN_BUILT and COPY src.txt of the builder stage
    rewritten = sorted((b.root / "rewritten").glob("*/*.json"))
    assert len(rewritten) == 3 and usage["rewritten_layers"] == 3  # the image's own layers
    assert usage["rewritten_bytes"] > 0
    assert usage["cache_bytes"] >= usage["rewritten_bytes"] + usage["step_snapshot_bytes"]

    b.cli("prune", "-f", "--filter", "until=24h")  # keeps all recent cache that can hit
    after = json.loads(b.cli("du", "--format", "json").stdout)
    assert _step_dirs(b) == _named_step_dirs(b)  # no directory without a record
    assert not (set(never_fetched) | orphans) & _step_dirs(b)
    assert after["records"] == usage["records"] - 2
    assert after["step_snapshots"] == len(_named_step_dirs(b)) == after["records"]
    assert not list((b.root / "rewritten").glob("*/*.json"))
    assert after["rewritten_layers"] == after["rewritten_bytes"] == 0
    assert not [p for p in (b.root / "cache" / "steps").iterdir() if not any(p.iterdir())]

    third = build_b("b2.tar")
    assert ran(b) == []
    local = {k for k, e in finished(b).items() if e.step.text.split()[0] in ("RUN", "COPY")
             and e.cached and not e.imported}
    assert local == {f"builder {RUN_OUT}", "stage-1 COPY --from=builder /out /out",
                     "stage-1 COPY app.txt /app.txt", f"stage-1 {RUN_STAMP}"}
    assert third.digest == before.digest  # type: ignore[attr-defined]
    assert (tmp_path / "b2.tar").read_bytes() == (tmp_path / "b1.tar").read_bytes()
    out = rootfs(third.image, tmp_path / "root-b")  # type: ignore[attr-defined]
    assert (out / "app.txt").read_text() == "app 1\n"


RUN_ZEROS = "RUN head -c 8388608 /dev/zero > /zeros"


@pytest.mark.parametrize("compression", ["gzip", "uncompressed"])
def test_an_imported_layer_past_the_layer_size_bound_is_a_miss(
        tmp_path: Path, remote_base: str, compression: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound of pulled base layers (CLOCHE_MAX_LAYER_SIZE) holds for a cache's layers:
    an 8 MiB layer (a few KiB of gzip) under a 4 MiB bound is refused, compressed or not,
    before it is stored; the step runs, and the store keeps no byte of it."""
    cache = tmp_path / "cache"
    text = f"FROM {remote_base}\n{RUN_ZEROS}\nRUN echo small > /small\n"
    a, b = machine(tmp_path, "a"), machine(tmp_path, "b")
    a.build(text, cache_to=f"type=local,dest={cache},mode=max,compression={compression}")
    blobs = {p.name: p.stat().st_size for p in (cache / "blobs" / "sha256").iterdir()}
    big = [name for name, size in blobs.items() if size > 100_000 and size < (8 << 20) + 4096]
    if compression == "uncompressed":
        assert len(big) == 1  # the 8 MiB tar itself
    monkeypatch.setenv("CLOCHE_MAX_LAYER_SIZE", "4M")  # the base (about 2 MiB) fits
    result = b.build(text, cache_from=f"type=local,src={cache}")
    assert [k.split(" ", 1)[1] for k in ran(b)] == [RUN_ZEROS]
    warnings = [w.message for w in b.recorder.of(ev.BuildWarning)]
    assert any("does not verify" in m and "CLOCHE_MAX_LAYER_SIZE" in m and "4 MiB" in m
               for m in warnings), warnings
    assert next(e for k, e in finished(b).items() if k.endswith("echo small > /small")).imported
    # none of the cache's blobs of that layer is kept, nor anything half written
    zeros_layer = result.image.layers[-2]
    cache_blobs = {Digest.parse("sha256:" + name) for name in blobs}
    own = {layer.digest for layer in result.image.layers}  # B's step may write the same tar
    assert not [d for d in cache_blobs - own if b.store.blobs.exists(d)
                and b.store.blobs.size(d) > 1 << 20]
    assert b.store.blobs.size(zeros_layer.digest) > 8 << 20  # B's own, as it ran the step
    assert not list(b.store.tmp_dir.iterdir())
    with monkeypatch.context() as m:
        m.delenv("CLOCHE_MAX_LAYER_SIZE")
        c = machine(tmp_path, "c")
        c.build(text, cache_from=f"type=local,src={cache}")
        assert ran(c) == []  # within the default bound the same cache is a hit


@pytest.mark.docker
@pytest.mark.timeout(3600)
def test_go_example_second_machine_runs_no_step(tmp_path: Path, go_base_images) -> None:
    """examples/go-hello on two empty stores sharing the loopback registry: B runs no RUN."""
    from cloche import api
    from cloche.engine.options import BuildOptions
    from tests.engine.conftest import Recorder
    from tests.fixtures.golang import GO_HELLO

    ref = go_base_images.golang.rsplit("/", 2)[0] + "/cache/go-hello:max"
    args = {"GOLANG_IMAGE": go_base_images.golang, "RUNTIME_IMAGE": go_base_images.runtime}
    results, recorders = [], []
    for name, flags in (("a", {"cache_to": (f"type=registry,ref={ref},mode=max",)}),
                        ("b", {"cache_from": (ref,)})):
        (tmp_path / name).mkdir()
        recorders.append(Recorder())
        results.append(api.build(BuildOptions(context=str(GO_HELLO), root=tmp_path / name,
                                              build_args=args, **flags),  # type: ignore[arg-type]
                                 listener=recorders[-1]))
    steps = [e for e in recorders[1].of(ev.StepFinished)
             if e.step.text.split()[0] in ("RUN", "COPY", "WORKDIR")]
    assert steps and all(e.cached and e.imported == ref for e in steps), steps
    assert any(e.step.text.startswith("RUN") for e in recorders[0].of(ev.StepFinished)
               if not e.cached)
    assert results[1].digest == results[0].digest
    # the SDK stage hit throughout: B read the golang image's manifest and config only (its
    # digest keys the steps) and downloaded none of its layers; the runtime's are the image's
    a_store, b_store = Store.open(tmp_path / "a"), Store.open(tmp_path / "b")
    sdk = a_store.image(go_base_images.golang)
    assert not [x for x in sdk.layers if b_store.blobs.exists(x.digest)]
    assert b_store.image(go_base_images.runtime).digest == \
        a_store.image(go_base_images.runtime).digest
    with pytest.raises(ImageNotFoundError):
        b_store.image(go_base_images.golang)
