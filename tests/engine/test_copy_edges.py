"""COPY edge cases found by the differential tests, where BuildKit fails the build."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cloche.engine.context import context_from_directory
from cloche.engine.copy import CopyRequest, copy_into
from cloche.engine.sources import SourceNotFoundError
from cloche.fs.users import resolve_chown


def test_a_wildcard_matching_a_dangling_link_fails(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "dangling").symlink_to("nowhere")
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(SourceNotFoundError) as caught:
        copy_into(CopyRequest(("dang*",), "/c/"), context_from_directory(ctx).tree, root)
    assert "nowhere" in str(caught.value)
    assert not os.listdir(root) or not any((root / "c").iterdir())


def test_chown_takes_any_32_bit_id(tmp_path: Path) -> None:
    assert resolve_chown(tmp_path, "4294967294:4294967294") == (4294967294, 4294967294)
    with pytest.raises(ValueError):
        resolve_chown(tmp_path, "4294967295")
