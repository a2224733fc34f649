"""COPY into a rootfs with real files: BuildKit's rules, ownership as root, and escape attempts."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cloche.engine.context import context_from_directory
from cloche.engine.copy import CopyDestinationError, CopyRequest, copy_into
from cloche.engine.fsutil import CopyTargetError
from cloche.engine.sources import SourceNotFoundError, SourceTree
from cloche.errors import UnsafePathError
from cloche.fs.users import UnknownUserError
from tests.fixtures.services import require_root

MTIME = 1_600_000_000 * 1_000_000_000


def make_root(path: Path) -> Path:
    """A small destination rootfs with users and groups, like a stage's merged directory."""
    (path / "etc").mkdir(parents=True)
    (path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                         "app:x:1000:1001:app:/home/app:/bin/sh\n")
    (path / "etc" / "group").write_text("root:x:0:\napp:x:1001:\nstaff:x:50:app\n")
    return path


def put(path: Path, text: str = "x", mode: int = 0o644, owner: tuple[int, int] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    if owner:
        os.chown(path, *owner)
    os.utime(path, ns=(MTIME, MTIME))
    return path


@pytest.fixture
def ctx_dir(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    put(ctx / "a.txt", "alpha", 0o640, (1234, 5678))
    put(ctx / "b.txt", "bravo", 0o755)
    put(ctx / "c.md", "charlie")
    put(ctx / "dir" / "sub" / "deep.txt", "deep", 0o600)
    put(ctx / "dir" / "top.txt", "top")
    (ctx / "dir" / "rel-link").symlink_to("top.txt")
    (ctx / "dir" / "abs-link").symlink_to("/etc/shadow")
    os.link(ctx / "dir" / "top.txt", ctx / "dir" / "hard.txt")
    os.chmod(ctx / "dir" / "sub", 0o750)
    os.utime(ctx / "dir" / "sub", ns=(MTIME, MTIME))
    return ctx


@pytest.fixture
def tree(ctx_dir: Path) -> SourceTree:
    return context_from_directory(ctx_dir).tree


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path / "rootfs")


def copy(tree: SourceTree, root: Path, *sources: str, dest: str, **kw: object):
    return copy_into(CopyRequest(tuple(sources), dest, **kw), tree, root)  # type: ignore[arg-type]


def owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_file_into_directory_keeps_mode_and_mtime_owner_reset(tree: SourceTree, root: Path) -> None:
    require_root()
    result = copy(tree, root, "a.txt", dest="/app/")
    target = root / "app" / "a.txt"
    assert target.read_text() == "alpha"
    assert mode(target) == 0o640
    assert os.lstat(target).st_mtime_ns == MTIME
    assert owner(target) == (0, 0)  # the context is sent with uid/gid 0
    assert mode(root / "app") == 0o755 and owner(root / "app") == (0, 0)
    assert (result.sources, result.entries, result.bytes) == (1, 1, 5)


def test_file_to_path_without_slash_names_the_file(tree: SourceTree, root: Path) -> None:
    copy(tree, root, "b.txt", dest="/opt/tool/run")
    assert (root / "opt" / "tool" / "run").read_text() == "bravo"
    assert mode(root / "opt" / "tool" / "run") == 0o755
    assert mode(root / "opt" / "tool") == 0o755


def test_file_to_existing_directory_without_slash(tree: SourceTree, root: Path) -> None:
    (root / "existing").mkdir()
    copy(tree, root, "b.txt", dest="/existing")
    assert (root / "existing" / "b.txt").read_text() == "bravo"


def test_relative_destination_is_under_workdir(tree: SourceTree, root: Path) -> None:
    copy(tree, root, "a.txt", dest="conf/", workdir="/srv/app")
    copy(tree, root, "b.txt", dest=".", workdir="/srv/app")
    assert (root / "srv" / "app" / "conf" / "a.txt").exists()
    assert (root / "srv" / "app" / "b.txt").exists()


def test_directory_copies_its_contents(tree: SourceTree, root: Path) -> None:
    copy(tree, root, "dir", dest="/data")
    data = root / "data"
    assert sorted(os.listdir(data)) == ["abs-link", "hard.txt", "rel-link", "sub", "top.txt"]
    assert mode(data) == 0o755  # a created destination is 0755, not the source's mode
    assert mode(data / "sub") == 0o750 and os.lstat(data / "sub").st_mtime_ns == MTIME
    assert mode(data / "sub" / "deep.txt") == 0o600
    assert os.readlink(data / "rel-link") == "top.txt"       # links copied as links
    assert os.readlink(data / "abs-link") == "/etc/shadow"   # never followed
    assert os.lstat(data / "hard.txt").st_ino == os.lstat(data / "top.txt").st_ino


def test_existing_destination_directory_keeps_its_metadata(tree: SourceTree, root: Path) -> None:
    require_root()
    (root / "data").mkdir(mode=0o700)
    os.chmod(root / "data", 0o700)
    os.chown(root / "data", 42, 42)
    copy(tree, root, "dir", dest="/data")
    assert mode(root / "data") == 0o700 and owner(root / "data") == (42, 42)
    assert (root / "data" / "sub" / "deep.txt").exists()


def test_several_sources_need_a_trailing_slash(tree: SourceTree, root: Path) -> None:
    with pytest.raises(CopyDestinationError, match="must be a directory and end with a /"):
        copy(tree, root, "a.txt", "b.txt", dest="/x")
    assert not (root / "x").exists()
    copy(tree, root, "a.txt", "b.txt", dest="/x/")
    assert sorted(os.listdir(root / "x")) == ["a.txt", "b.txt"]


def test_several_sources_into_an_existing_directory(tree: SourceTree, root: Path) -> None:
    """BuildKit accepts a destination without '/' when it is a directory already."""
    (root / "existing").mkdir()
    copy(tree, root, "a.txt", "b.txt", dest="/existing")
    assert sorted(os.listdir(root / "existing")) == ["a.txt", "b.txt"]


def test_wildcards_use_go_match(tree: SourceTree, root: Path) -> None:
    copy(tree, root, "*.txt", dest="/w/")
    assert sorted(os.listdir(root / "w")) == ["a.txt", "b.txt"]
    copy(tree, root, "[bc].*", dest="/v/")
    assert sorted(os.listdir(root / "v")) == ["b.txt", "c.md"]
    copy(tree, root, "d*/s?b", dest="/u/")  # a directory match copies its contents
    assert os.listdir(root / "u") == ["deep.txt"]


def test_wildcard_matching_several_files_onto_a_file_path(tree: SourceTree, root: Path) -> None:
    copy(tree, root, "*.txt", dest="/single")  # BuildKit: copied in turn, the last one wins
    assert (root / "single").read_text() == "bravo"


def test_empty_wildcard_is_not_an_error_but_a_missing_file_is(tree: SourceTree, root: Path) -> None:
    assert copy(tree, root, "*.nothing", dest="/e/").sources == 0
    with pytest.raises(SourceNotFoundError) as info:
        copy(tree, root, "missing.txt", dest="/e/")
    assert "missing.txt" in str(info.value)


def test_chown_by_name_in_destination_root(tree: SourceTree, root: Path) -> None:
    require_root()
    copy(tree, root, "dir", dest="/home/app/data/", chown="app")
    data = root / "home" / "app" / "data"
    assert owner(data / "top.txt") == (1000, 1001)
    assert owner(data / "rel-link") == (1000, 1001)
    assert owner(data / "sub") == (1000, 1001)
    # parents created for the copy belong to the --chown user too (BuildKit's MkdirAll)
    assert owner(root / "home") == (1000, 1001) and owner(data) == (1000, 1001)
    copy(tree, root, "a.txt", dest="/g/", chown="app:staff")
    assert owner(root / "g" / "a.txt") == (1000, 50)
    copy(tree, root, "a.txt", dest="/n/", chown="4242")
    assert owner(root / "n" / "a.txt") == (4242, 4242)
    with pytest.raises(UnknownUserError, match="nosuchuser"):
        copy(tree, root, "a.txt", dest="/q/", chown="nosuchuser")


def test_chown_leaves_existing_parents_alone(tree: SourceTree, root: Path) -> None:
    require_root()
    (root / "srv").mkdir()
    copy(tree, root, "a.txt", dest="/srv/new/", chown="1000:1000")
    assert owner(root / "srv") == (0, 0)
    assert owner(root / "srv" / "new") == (1000, 1000)


def test_chmod_octal_and_symbolic(tree: SourceTree, root: Path) -> None:
    copy(tree, root, "dir", dest="/o/", chmod="0640")
    assert mode(root / "o" / "top.txt") == 0o640
    assert mode(root / "o" / "sub") == 0o640       # BuildKit applies it to directories too
    assert mode(root / "o") == 0o640               # the created destination too (current
    #                                                BuildKit; v0.8 left it 0755)
    assert os.readlink(root / "o" / "rel-link") == "top.txt"
    copy(tree, root, "a.txt", "dir/sub", dest="/s/", chmod="u+x,g-r,o=rX")
    # 0640 -> u+x 0740 -> g-r 0700 -> o=rX 0705 (X: an execute bit is set by now)
    assert mode(root / "s" / "a.txt") == 0o705
    assert mode(root / "s" / "deep.txt") == 0o705
    copy(tree, root, "c.md", dest="/s2/", chmod="a=rX")
    assert mode(root / "s2" / "c.md") == 0o444


def test_copy_from_stage_keeps_owners_and_ignores_dockerignore(tmp_path: Path, root: Path) -> None:
    require_root()
    stage = tmp_path / "stage"
    put(stage / "app" / "bin" / "tool", "t", 0o4755, (1000, 1001))
    os.chmod(stage / "app" / "bin" / "tool", 0o4755)  # chown cleared the set-uid bit
    put(stage / "app" / ".dockerignore", "bin\n")
    put(stage / ".dockerignore", "app\n")
    copy(SourceTree.stage(stage, "build"), root, "/app", dest="/opt/")
    tool = root / "opt" / "bin" / "tool"
    assert owner(tool) == (1000, 1001)
    assert mode(tool) == 0o4755
    assert (root / "opt" / ".dockerignore").exists()


def test_dockerignore_applies_to_the_context(ctx_dir: Path, root: Path) -> None:
    (ctx_dir / ".dockerignore").write_text("*.md\ndir\n!dir/sub\n")
    tree = context_from_directory(ctx_dir).tree
    copy(tree, root, ".", dest="/all/")
    assert sorted(os.listdir(root / "all")) == [".dockerignore", "a.txt", "b.txt", "dir"]
    assert os.listdir(root / "all" / "dir") == ["sub"]  # re-included below an excluded dir
    assert (root / "all" / "dir" / "sub" / "deep.txt").read_text() == "deep"
    with pytest.raises(SourceNotFoundError, match="excluded by .dockerignore"):
        copy(tree, root, "c.md", dest="/x/")
    # an excluded directory named as a source still holds what an exception re-includes
    copy(tree, root, "dir", dest="/named/")
    assert os.listdir(root / "named") == ["sub"]
    with pytest.raises(SourceNotFoundError, match="excluded by .dockerignore"):
        copy(tree, root, "dir/top.txt", dest="/x/")
    assert copy(tree, root, "*.md", dest="/y/").sources == 0


def test_exclude_flag(tree: SourceTree, root: Path) -> None:
    copy(tree, root, ".", dest="/ex/", excludes=("*.md", "dir/sub", "**/hard.txt"))
    assert sorted(os.listdir(root / "ex")) == ["a.txt", "b.txt", "dir"]
    assert sorted(os.listdir(root / "ex" / "dir")) == ["abs-link", "rel-link", "top.txt"]
    copy(tree, root, "dir", dest="/ex2/", excludes=("*.txt", "!top.txt"))
    assert sorted(os.listdir(root / "ex2")) == ["abs-link", "rel-link", "sub", "top.txt"]
    assert os.listdir(root / "ex2" / "sub") == ["deep.txt"]  # "*.txt" is anchored: not sub/


def test_exclude_matches_below_each_source_never_the_source(tree: SourceTree, root: Path) -> None:
    """As BuildKit (fsutil copy matches --exclude from each source's own root): a wildcard's
    matches are copied even when their names match, only what is below them is excluded."""
    copy(tree, root, "*", dest="/w/", excludes=("*.txt", "sub"))
    # the file sources a.txt, b.txt, c.md; dir's contents but its *.txt and sub
    assert sorted(os.listdir(root / "w")) == ["a.txt", "abs-link", "b.txt", "c.md", "rel-link"]
    copy(tree, root, "a.txt", dest="/f/", excludes=("a.txt",))
    assert os.listdir(root / "f") == ["a.txt"]
    copy(tree, root, "dir/sub", dest="/d/", excludes=("sub", "*.txt"))
    assert os.listdir(root / "d") == []


def test_each_match_of_a_wildcard_is_copied_on_its_own(tree: SourceTree, root: Path) -> None:
    """BuildKit's file op copies each match of a wildcard with its own fsutil copy: hard links
    between two matches are not kept, those within one (a directory) are."""
    copy(tree, root, "dir/*.txt", dest="/w/")
    assert os.lstat(root / "w" / "hard.txt").st_ino != os.lstat(root / "w" / "top.txt").st_ino
    copy(tree, root, "di*", dest="/d/")
    assert os.lstat(root / "d" / "hard.txt").st_ino == os.lstat(root / "d" / "top.txt").st_ino


def test_parents_keeps_source_paths(tree: SourceTree, root: Path) -> None:
    copy(tree, root, "dir/sub/deep.txt", "a.txt", dest="/p/", parents=True)
    assert (root / "p" / "dir" / "sub" / "deep.txt").read_text() == "deep"
    assert (root / "p" / "a.txt").exists()
    copy(tree, root, "./dir/./sub/*.txt", dest="/q/", parents=True)
    assert (root / "q" / "sub" / "deep.txt").exists()
    copy(tree, root, "dir/sub", dest="/r/", parents=True)
    assert (root / "r" / "dir" / "sub" / "deep.txt").exists()
    # kept parents are copied from the source directories (mode, times), not made 0755 now
    assert mode(root / "p" / "dir" / "sub") == 0o750
    assert os.lstat(root / "p" / "dir" / "sub").st_mtime_ns == MTIME
    assert mode(root / "r" / "dir" / "sub") == 0o750


def test_parents_never_follow_a_destination_link(tree: SourceTree, root: Path,
                                                 tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "p").mkdir()
    (root / "p" / "dir").symlink_to(outside)
    with pytest.raises(CopyTargetError, match="cannot copy to non-directory: /p/dir"):
        copy(tree, root, "dir/sub/deep.txt", dest="/p/", parents=True)
    assert os.listdir(outside) == []


def test_file_replaces_file_and_link_but_not_directory(tree: SourceTree, root: Path,
                                                       tmp_path: Path) -> None:
    victim = put(tmp_path / "outside" / "victim", "untouched")
    (root / "t").mkdir()
    (root / "t" / "a.txt").symlink_to(victim)     # a link at the target is replaced, not followed
    copy(tree, root, "a.txt", dest="/t/")
    assert victim.read_text() == "untouched"
    assert not (root / "t" / "a.txt").is_symlink()
    assert (root / "t" / "a.txt").read_text() == "alpha"
    (root / "t" / "b.txt").mkdir()
    with pytest.raises(CopyTargetError, match="/t/b.txt"):
        copy(tree, root, "b.txt", dest="/t/")


def test_directory_over_a_symlink_is_an_error(tree: SourceTree, root: Path) -> None:
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    put(tree.root / "tree" / "lib" / "x.so")
    with pytest.raises(CopyTargetError, match="cannot copy to non-directory: /lib"):
        copy(tree, root, "tree", dest="/")


# ---- escape attempts: each fails clearly, or stays inside the root; nothing written outside


def test_source_dotdot_is_refused(tree: SourceTree, root: Path, tmp_path: Path) -> None:
    put(tmp_path / "secret", "s")
    for source in ("../secret", "dir/../../secret", "dir/../../ctx/a.txt"):
        with pytest.raises(UnsafePathError) as info:
            copy(tree, root, source, dest="/x/")
        assert source in str(info.value)
    assert not (root / "x").exists()


def test_context_symlink_to_etc_is_not_followed_out(tree: SourceTree, root: Path) -> None:
    (tree.root / "etc-link").symlink_to("/etc")
    (tree.root / "up-link").symlink_to("../../../../../../etc/hostname")
    with pytest.raises(SourceNotFoundError) as info:
        copy(tree, root, "etc-link/passwd", dest="/x/")
    assert "etc-link/passwd" in str(info.value) and "inside the tree" in str(info.value)
    with pytest.raises(SourceNotFoundError, match="up-link"):
        copy(tree, root, "up-link", dest="/x/")
    assert copy(tree, root, "etc-*/passwd", dest="/y/").sources == 0
    assert not (root / "x").exists()


def test_symlink_source_followed_inside_context(tree: SourceTree, root: Path) -> None:
    (tree.root / "abs").symlink_to("/b.txt")  # absolute targets are resolved in the context
    copy(tree, root, "abs", "dir/rel-link", dest="/l/")
    assert (root / "l" / "abs").read_text() == "bravo"
    assert (root / "l" / "rel-link").read_text() == "top"
    assert not (root / "l" / "abs").is_symlink()


@pytest.mark.parametrize("link_target", ["/", "../../../..", "/../.."])
def test_destination_symlink_stays_in_root(tree: SourceTree, root: Path, tmp_path: Path,
                                           link_target: str) -> None:
    (root / "evil").symlink_to(link_target)
    before = sorted(os.listdir(tmp_path))
    copy(tree, root, "a.txt", dest="/evil/")
    copy(tree, root, "dir", dest="/evil/sub/")
    assert (root / "a.txt").read_text() == "alpha"
    assert (root / "sub" / "top.txt").read_text() == "top"
    assert sorted(os.listdir(tmp_path)) == before


def test_destination_symlink_to_host_path_is_confined(tree: SourceTree, root: Path,
                                                      tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "out").symlink_to(outside)  # an absolute host path means <root>/<that path>
    copy(tree, root, "a.txt", dest="/out/")
    assert os.listdir(outside) == []
    assert (root / str(outside).lstrip("/") / "a.txt").read_text() == "alpha"


def test_link_copies_into_an_empty_root_with_names_from_the_stage(tree: SourceTree, root: Path,
                                                                   tmp_path: Path) -> None:
    require_root()
    layer = tmp_path / "link-layer"
    layer.mkdir()
    copy_into(CopyRequest(("a.txt",), "/home/app/", chown="app", link=True), tree, layer,
              users_root=root)
    assert owner(layer / "home" / "app" / "a.txt") == (1000, 1001)
    assert sorted(os.listdir(layer)) == ["home"]


def test_heredoc_documents(tmp_path: Path, root: Path) -> None:
    from cloche.engine.sources import inline_tree

    docs = tmp_path / "docs"
    docs.mkdir()
    tree = inline_tree([("EOF", b"line one\n"), ("CONF", b"k=v\n")], docs)
    copy_into(CopyRequest(("EOF",), "/etc/motd"), tree, root)
    copy_into(CopyRequest(("CONF",), "/etc/app/", chmod="600"), tree, root)
    assert (root / "etc" / "motd").read_bytes() == b"line one\n" and mode(root / "etc" / "motd") == 0o644
    assert mode(root / "etc" / "app" / "CONF") == 0o600
    with pytest.raises(UnsafePathError):
        inline_tree([("../x", b"")], docs)


def test_io_errors_become_clear_errors(tree: SourceTree, root: Path) -> None:
    from cloche.engine.fsutil import CopyIOError

    (root / "full").mkdir()
    os.mkfifo(tree.root / "pipe")
    copy(tree, root, "pipe", dest="/full/")  # a FIFO is recreated, never read
    assert stat.S_ISFIFO(os.lstat(root / "full" / "pipe").st_mode)
    with pytest.raises(CopyIOError) as info:
        copy(tree, root, "a.txt", dest="/full/" + "n" * 300)  # a name the kernel refuses
    assert "/full/nnn" in str(info.value) and "too long" in str(info.value)
