"""The library's face for images: cloche.import_image, inspect, images, save, load, used the
way a program would, through the top-level names."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import cloche


def _rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hello").write_text("hello\n")
    return root


def test_import_inspect_save_load_round_trip(tmp_path: Path) -> None:
    store = tmp_path / "store"
    image = cloche.import_image(_rootfs(tmp_path), "app:1", root=store,
                                changes=["EXPOSE 80-81", "WORKDIR srv", "ENV A=1 B=$A"],
                                message="from a test", platform="linux/arm64")
    assert isinstance(image, cloche.Image)
    doc = cloche.inspect("app:1", root=store)
    assert doc["Id"] == str(image.config_digest) and doc["RepoTags"] == ["app:1"]
    assert doc["Config"] == {"ExposedPorts": {"80/tcp": {}, "81/tcp": {}},
                             "WorkingDir": "/srv", "Env": ["A=1", "B="]}
    assert (doc["Os"], doc["Architecture"]) == ("linux", "arm64")
    assert doc["History"] == [{"created": doc["Created"], "comment": "from a test"}]
    rows = cloche.images(root=store)
    assert [(r.repository, r.tag, r.image_id) for r in rows] == [
        ("app", "1", str(image.config_digest))]

    archive = tmp_path / "app.tar"
    saved = cloche.save("app:1", archive, root=store)
    assert [s.digest for s in saved] == [image.digest]
    other = tmp_path / "other"
    loaded = cloche.load(archive, root=other)
    assert [(item.image.digest, item.names) for item in loaded] == [
        (image.digest, ("docker.io/library/app:1",))]
    assert cloche.inspect("app:1", root=other)["Config"] == doc["Config"]


def test_import_from_a_stream_and_a_bad_change(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("hello")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    raw.seek(0)
    image = cloche.import_image(raw, root=tmp_path / "store")  # unnamed, as docker import -
    assert cloche.inspect(str(image.config_digest), root=tmp_path / "store")["RepoTags"] == []
    with pytest.raises(cloche.ChangeError, match="RUN cannot be used with import"):
        cloche.import_image(_rootfs(tmp_path), "x:1", changes=["RUN true"],
                            root=tmp_path / "store")
    assert [r.repository for r in cloche.images(root=tmp_path / "store")] == ["<none>"]


def test_reading_operations_do_not_make_a_store_at_a_wrong_root(tmp_path: Path) -> None:
    typo = tmp_path / "typo"
    for call in (lambda: cloche.inspect("x", root=typo), lambda: cloche.images(root=typo),
                 lambda: cloche.save(["x"], tmp_path / "a.tar", root=typo),
                 lambda: cloche.push("x", root=typo)):
        with pytest.raises(cloche.StoreError, match="does not exist"):
            call()
    assert not typo.exists()
    # loading makes a store (as pull, import and build do); then a missing image is just that
    assert cloche.load(_empty_archive(tmp_path), root=tmp_path / "fresh") == []
    with pytest.raises(cloche.ImageNotFoundError):
        cloche.inspect("nothing:here", root=tmp_path / "fresh")


def _empty_archive(tmp_path: Path) -> Path:
    """An OCI archive with no image (what ``save`` of nothing would write)."""
    path = tmp_path / "empty.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                           ("index.json", b'{"schemaVersion":2,"manifests":[]}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_import_cloche_stays_cheap() -> None:
    """The face's names load on first use: ``import cloche`` loads no operation, no store."""
    code = ("import sys, cloche; cloche.__all__; "
            "print(sorted(m for m in sys.modules if m.startswith('cloche')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "['cloche', 'cloche._lazy']"  # the lazy-export helper only
    for name in ("pull", "push", "save", "load", "inspect", "images", "import_image",
                 "PushResult", "LoadedImage", "Reference", "Event", "Listener"):
        assert name in cloche.__all__ and getattr(cloche, name) is not None


def test_the_top_level_exports_are_what_all_says() -> None:
    """Every name of ``cloche.__all__`` loads, and ``__all__`` lists the whole lazy table."""
    import cloche

    assert sorted(cloche.__all__) == sorted([*cloche._EXPORTS, "__version__"])
    for name in cloche.__all__:
        assert getattr(cloche, name) is not None, name


def test_a_user_program_type_checks_against_the_face(tmp_path: Path) -> None:
    """The package is typed (py.typed): a program using the face passes ``mypy --strict``,
    and a wrong use of it is caught (so the check cannot pass by seeing nothing)."""
    import shutil
    import subprocess
    import sys

    import cloche

    package = Path(cloche.__file__).parent
    assert (package / "py.typed").is_file()
    mypy = shutil.which("mypy", path=str(Path(sys.executable).parent))
    assert mypy is not None, "mypy is installed with the test extras"
    good = tmp_path / "good.py"
    good.write_text(
        "import cloche\n\n"
        "def main() -> str:\n"
        "    result: cloche.BuildResult = cloche.build('.', tags=['a:1'])\n"
        "    image: cloche.Image = cloche.pull('127.0.0.1:5000/a:1')\n"
        "    cloche.save(['a:1'], 'a.tar', format='docker')\n"
        "    try:\n"
        "        cloche.import_image('rootfs', 'b:1', changes=['EXPOSE 80'])\n"
        "    except cloche.ClocheError as err:\n"
        "        return err.message\n"
        "    return str(result.digest) + str(image.digest)\n")
    bad = tmp_path / "bad.py"
    bad.write_text("import cloche\n\nx: int = cloche.build('.')\n")
    env = {"PATH": "/usr/bin:/bin", "MYPY_CACHE_DIR": str(tmp_path / "cache")}
    ok = subprocess.run([mypy, "--strict", str(good)], capture_output=True, text=True, env=env,
                        cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = subprocess.run([mypy, "--strict", str(bad)], capture_output=True, text=True,
                           env=env, cwd=tmp_path)
    assert wrong.returncode == 1 and "bad.py:3" in wrong.stdout, wrong.stdout
