"""Two cloche processes on one store: no name is lost, no blob is torn."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cloche.oci.digest import Digest
from cloche.store import LockBusyError
from cloche.store.store import Store
from tests.store.helpers import put_raw_image

PER_PROCESS = 40


def test_two_processes_tagging_lose_no_tag(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store")
    desc = put_raw_image(store, "shared")
    script = textwrap.dedent(f"""
        import sys
        from cloche.oci.descriptor import Descriptor
        from cloche.oci.digest import Digest
        from cloche.store.store import Store
        store = Store.open({str(store.root)!r})
        desc = Descriptor({desc.media_type!r}, Digest.parse({str(desc.digest)!r}), {desc.size})
        who = sys.argv[1]
        sys.stdin.readline()  # start together
        for i in range({PER_PROCESS}):
            store.tag(f"app-{{who}}:{{i}}", desc)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, who], stdin=subprocess.PIPE)
             for who in ("a", "b")]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.flush()
    for p in procs:
        p.stdin.close()  # type: ignore[union-attr]
        assert p.wait(120) == 0
    names = {n for n, _ in store.names()}
    expected = {f"docker.io/library/app-{w}:{i}" for w in "ab" for i in range(PER_PROCESS)}
    assert names == expected


def test_two_processes_writing_the_same_blob(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store.open(root)
    script = textwrap.dedent(f"""
        from cloche.store.store import Store
        store = Store.open({str(root)!r})
        data = bytes(range(256)) * 4096
        for _ in range(20):
            with store.blobs.writer() as w:
                for i in range(0, len(data), 4096):
                    w.write(data[i:i + 4096])
        print(w.digest)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    store = Store.open(root)
    assert len(set(outs)) == 1
    assert [str(d) for d in store.blobs.digests()] == outs[:1]
    store.blobs.check(next(iter(store.blobs.digests())))
    assert list(store.blobs.tmp_dir.iterdir()) == []



def test_gc_does_not_run_under_a_lease_of_another_process(tmp_path: Path) -> None:
    """While a writer holds a lease (blobs written, name not yet given), gc cannot run."""
    store = Store.open(tmp_path / "store")
    script = textwrap.dedent(f"""
        import sys
        from cloche.store.store import Store
        from tests.store.helpers import put_raw_image
        store = Store.open({str(store.root)!r})
        with store.lease():
            desc = put_raw_image(store, "leased")  # blobs only: no name yet
            print(desc.digest, flush=True)
            sys.stdin.readline()
            store.tag("leased", desc)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    assert proc.stdin is not None and proc.stdout is not None
    manifest = Digest.parse(proc.stdout.readline().strip())
    with pytest.raises(LockBusyError):
        store.gc(grace_seconds=0, wait=False)  # would delete the unnamed blobs otherwise
    assert store.blobs.exists(manifest)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.wait(60) == 0
    assert store.gc(grace_seconds=0, wait=False).blobs_removed == 0
    assert store.image("leased").digest == manifest


def test_unnamed_blobs_without_a_lease_are_collected(tmp_path: Path) -> None:
    """The counterpart: the same blobs, no lease and no name, are garbage."""
    store = Store.open(tmp_path / "store")
    put_raw_image(store, "loose")
    assert store.gc(grace_seconds=0, wait=False).blobs_removed == 3
