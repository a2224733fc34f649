"""RUN --mount through the engine: cache mounts persist across builds but never ship, secrets
are readable in the step and nowhere else, binds from stages and the context, tmpfs."""

from __future__ import annotations

import gzip
import hashlib
import secrets
import zlib
from pathlib import Path

import pytest

from cloche.engine.options import parse_secret
from cloche.errors import BuildError
from tests.engine.conftest import BASE, Builder, layer_members, rootfs


def _no_mount_leftovers(result, *prefixes: str) -> None:
    for layer in result.image.layers[1:]:
        names = [m.name.lstrip("./") for m in layer_members(layer)]
        bad = [n for n in names if any(n == p or n.startswith(p + "/") for p in prefixes)]
        assert not bad, f"mount contents or mount points in a layer: {bad}"


def test_cache_mount_persists_across_builds_and_never_ships(builder: Builder,
                                                           tmp_path: Path) -> None:
    first = builder.build(f"FROM {BASE}\n"
                          "RUN --mount=type=cache,target=/var/cache/app "
                          "echo from-first-build > /var/cache/app/stash\n")
    _no_mount_leftovers(first, "var/cache")
    # only the mount changed: an empty layer, as in BuildKit
    assert [layer_members(layer) for layer in first.image.layers[1:]] == [[]]
    second = builder.build(f"FROM {BASE}\n"
                           "RUN --mount=type=cache,target=/var/cache/app "
                           "cat /var/cache/app/stash > /seen\n")
    root = rootfs(second.image, tmp_path / "out")
    assert (root / "seen").read_text() == "from-first-build\n"
    assert not (root / "var/cache/app").exists()
    _no_mount_leftovers(second, "var/cache")


def test_cache_mount_by_id_is_shared_between_targets(builder: Builder, tmp_path: Path) -> None:
    builder.build(f"FROM {BASE}\nRUN --mount=type=cache,id=shared,target=/a echo 1 > /a/one\n")
    result = builder.build(f"FROM {BASE}\n"
                           "RUN --mount=type=cache,id=shared,target=/b ls /b > /listing\n")
    assert (rootfs(result.image, tmp_path / "out") / "listing").read_text() == "one\n"


def test_cache_mount_with_uid_gid_or_mode_is_another_cache(builder: Builder,
                                                            tmp_path: Path) -> None:
    """BuildKit keys a cache on its id and the directory it starts from: uid, gid or mode make
    one for them (setCacheUIDGID), so the same id without them, or with others, is another
    cache; the same values again are the same cache."""
    result = builder.build(
        f"FROM {BASE}\n"
        "RUN --mount=type=cache,id=c1,target=/c,uid=1000,gid=50,mode=0700 "
        "stat -c '%u %g %a' /c > /made && echo x > /c/x\n"
        "RUN --mount=type=cache,id=c1,target=/c ls /c > /plain\n"
        "RUN --mount=type=cache,id=c1,target=/c,mode=0700 ls /c > /mode-only\n"
        "RUN --mount=type=cache,id=c1,target=/d,gid=50,uid=1000,mode=700 ls /d > /same\n")
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "made").read_text() == "1000 50 700\n"
    assert (root / "plain").read_text() == ""
    assert (root / "mode-only").read_text() == ""
    assert (root / "same").read_text() == "x\n"


def _all_store_bytes(root: Path) -> list[tuple[Path, bytes]]:
    """Every file of the store as stored and, for compressed blobs, decompressed."""
    found = []
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        found.append((path, data))
        if data[:2] == b"\x1f\x8b":
            try:
                found.append((path, gzip.decompress(data)))
            except (OSError, EOFError, zlib.error):
                pass
    return found


def test_secret_is_readable_in_the_step_and_nowhere_else(builder: Builder,
                                                         tmp_path: Path) -> None:
    value = "s3cr3t-" + secrets.token_hex(16)
    src = tmp_path / "token.txt"
    src.write_text(value)
    ctx = builder.context(f"FROM {BASE}\n"
                          "RUN --mount=type=secret,id=token "
                          "sha256sum /run/secrets/token | cut -d' ' -f1 > /sum "
                          "&& stat -c %a /run/secrets/token > /mode\n"
                          "RUN --mount=type=secret,id=token,target=/etc/tok,uid=1000,mode=0440 "
                          "stat -c %u:%a /etc/tok > /custom\n")
    log = builder.cli("build", "--progress", "plain", "--secret", f"id=token,src={src}",
                      "-t", "secret/app:1", str(ctx))
    image = builder.store.image("secret/app:1")
    root = rootfs(image, tmp_path / "out")
    assert (root / "sum").read_text().strip() == hashlib.sha256(value.encode()).hexdigest()
    assert (root / "mode").read_text() == "400\n"
    assert (root / "custom").read_text() == "1000:440\n"
    assert not (root / "run/secrets").exists() and not (root / "etc/tok").exists()
    assert value not in log.stdout and value not in log.stderr
    assert value.encode() not in image.config_bytes
    leaks = [str(p) for p, data in _all_store_bytes(builder.root) if value.encode() in data]
    assert not leaks, f"the secret is in {leaks}"


def test_the_leak_search_finds_a_build_arg(builder: Builder, tmp_path: Path) -> None:
    """The same search over a build that passes the value as an ARG finds it: the search works."""
    value = "arg-" + secrets.token_hex(16)
    builder.build(f"FROM {BASE}\nARG TOKEN\nRUN echo \"$TOKEN\" | sha256sum > /sum\n",
                  build_args={"TOKEN": value}, tags=("leaky:1",))
    assert any(value.encode() in data for _, data in _all_store_bytes(builder.root))


def test_secret_from_an_environment_variable(builder: Builder, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOCHE_TEST_SECRET", "env-value")
    result = builder.build(f"FROM {BASE}\n"
                           "RUN --mount=type=secret,id=CLOCHE_TEST_SECRET "
                           "wc -c < /run/secrets/CLOCHE_TEST_SECRET > /len\n",
                           secrets=(parse_secret("id=CLOCHE_TEST_SECRET"),))
    assert (rootfs(result.image, tmp_path / "out") / "len").read_text().strip() == "9"


def test_required_secret_missing_is_a_clear_error(builder: Builder) -> None:
    with pytest.raises(BuildError) as info:
        builder.build(f"FROM {BASE}\nRUN true\n"
                      "RUN --mount=type=secret,id=npmrc,required=true cat /run/secrets/npmrc\n")
    err = info.value
    assert err.line == 3
    assert "npmrc" in err.message and "required" in err.message
    assert "--secret" in (err.hint or "")


def test_optional_secret_missing_runs_without_it(builder: Builder, tmp_path: Path) -> None:
    result = builder.build(f"FROM {BASE}\n"
                           "RUN --mount=type=secret,id=maybe "
                           "sh -c 'test -e /run/secrets/maybe && echo yes || echo no' > /had\n")
    assert (rootfs(result.image, tmp_path / "out") / "had").read_text() == "no\n"


def test_bind_mount_from_a_stage_and_the_context(builder: Builder, tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE} AS tools\nRUN mkdir /out && echo tool > /out/tool.txt\n"
                  f"FROM {BASE}\n"
                  "RUN --mount=type=bind,from=tools,source=/out,target=/mnt/tools "
                  "cat /mnt/tools/tool.txt > /from-stage\n"
                  "RUN --mount=type=bind,source=data.txt,target=/mnt/data.txt "
                  "cat /mnt/data.txt > /from-context\n"
                  "RUN --mount=type=bind,from=tools,source=/out,target=/mnt/rw,rw "
                  "echo scribble > /mnt/rw/tool.txt && cat /mnt/rw/tool.txt > /rw-seen\n"
                  "RUN --mount=type=bind,from=tools,source=/out,target=/mnt/again "
                  "cat /mnt/again/tool.txt > /after-rw\n")
    result = builder.build(dockerfile, {"data.txt": "context data"})
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "from-stage").read_text() == "tool\n"
    assert (root / "from-context").read_text() == "context data"
    assert (root / "rw-seen").read_text() == "scribble\n"
    assert (root / "after-rw").read_text() == "tool\n"  # rw writes are thrown away
    assert not (root / "mnt").exists()
    _no_mount_leftovers(result, "mnt")


def test_bind_mount_is_read_only_by_default(builder: Builder) -> None:
    with pytest.raises(BuildError) as info:
        builder.build(f"FROM {BASE}\n"
                      "RUN --mount=type=bind,source=.,target=/src touch /src/new\n",
                      {"a": "a"})
    assert "Read-only" in info.value.output_tail or "read-only" in info.value.output_tail


def test_tmpfs_mount(builder: Builder, tmp_path: Path) -> None:
    result = builder.build(f"FROM {BASE}\n"
                           "RUN --mount=type=tmpfs,target=/scratch "
                           "echo x > /scratch/x && grep ' /scratch ' /proc/mounts "
                           "| cut -d' ' -f3 > /fstype\n")
    root = rootfs(result.image, tmp_path / "out")
    assert (root / "fstype").read_text() == "tmpfs\n"
    assert not (root / "scratch").exists()
    _no_mount_leftovers(result, "scratch")



def test_readonly_cache_mount_cannot_be_written(builder: Builder) -> None:
    builder.build(f"FROM {BASE}\nRUN --mount=type=cache,id=ro,target=/c echo seed > /c/seed\n")
    with pytest.raises(BuildError) as info:
        builder.build(f"FROM {BASE}\n"
                      "RUN --mount=type=cache,id=ro,target=/c,readonly cat /c/seed && "
                      "touch /c/new\n")
    assert "seed" in info.value.output_tail
    assert "Read-only" in info.value.output_tail


def test_private_cache_persists_when_nobody_else_holds_it(builder: Builder,
                                                          tmp_path: Path) -> None:
    builder.build(f"FROM {BASE}\n"
                  "RUN --mount=type=cache,id=p,target=/c,sharing=private echo kept > /c/f\n")
    result = builder.build(f"FROM {BASE}\n"
                           "RUN --mount=type=cache,id=p,target=/c,sharing=private cat /c/f > /s\n")
    assert (rootfs(result.image, tmp_path / "out") / "s").read_text() == "kept\n"


def test_locked_cache_steps_do_not_overlap(builder: Builder, tmp_path: Path) -> None:
    """Two stages run at once but their sharing=locked steps take turns (intervals recorded
    inside the steps, in the cache itself)."""
    stage = ("FROM {base} AS {name}\n"
             "RUN --mount=type=cache,id=lk,target=/c,sharing=locked "
             "cut -d' ' -f1 /proc/uptime > /c/{name}.start && sleep 1.5 && "
             "cut -d' ' -f1 /proc/uptime > /c/{name}.end && echo {name} > /{name}\n")
    dockerfile = (stage.format(base=BASE, name="left") + stage.format(base=BASE, name="right")
                  + f"FROM {BASE}\nCOPY --from=left /left /\nCOPY --from=right /right /\n"
                  "RUN --mount=type=cache,id=lk,target=/c cp -r /c /seen\n")
    result = builder.build(dockerfile, jobs=2)
    seen = rootfs(result.image, tmp_path / "out") / "seen"
    spans = sorted((float((seen / f"{n}.start").read_text()),
                    float((seen / f"{n}.end").read_text())) for n in ("left", "right"))
    assert spans[0][1] <= spans[1][0], f"locked cache steps overlapped: {spans}"


def test_bind_of_the_context_applies_dockerignore(builder: Builder, tmp_path: Path) -> None:
    dockerfile = (f"FROM {BASE}\nUSER app\n"
                  "RUN --mount=type=bind,target=/src ls -A /src > /tmp/listing\n")
    files = {"kept.txt": "k", "private.key": "p", ".git/config": "g",
             ".dockerignore": "*.key\n.git\n"}
    result = builder.build(dockerfile, files)
    listing = (rootfs(result.image, tmp_path / "out") / "tmp/listing").read_text().split()
    assert sorted(listing) == [".dockerignore", "Dockerfile", "kept.txt"]


def test_secret_types_as_buildx_reads_them() -> None:
    from cloche.engine.options import SecretSpec
    from cloche.errors import ConfigError

    assert parse_secret("id=tok,type=env,src=MY_VAR") == SecretSpec("tok", None, "MY_VAR")
    assert parse_secret("id=tok,type=env") == SecretSpec("tok", None, "tok")
    assert parse_secret("id=tok,type=file,src=/run/tok") == SecretSpec("tok", "/run/tok", None)
    assert parse_secret("type=env,id=tok,env=OTHER") == SecretSpec("tok", None, "OTHER")
    with pytest.raises(ConfigError, match="unsupported secret type 'vault'"):
        parse_secret("id=tok,type=vault")
