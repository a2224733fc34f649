"""Property test of path cleaning: whatever a tar names, the cleaned path never climbs.

(Hostile-apply property tests with host-absolute link targets were removed: under a regression
of apply.py they would write to the host. They must come back only inside a chroot jail.)
"""

from __future__ import annotations

import posixpath

from hypothesis import given
from hypothesis import strategies as st

from cloche.errors import UnsafePathError
from cloche.layers import clean_path


@given(st.text(st.sampled_from(["a", "/", ".", "b"]), max_size=20))
def test_clean_path_never_climbs(name: str) -> None:
    try:
        cleaned = clean_path(name)
    except UnsafePathError:
        assert posixpath.normpath(name.lstrip("/") or ".").split("/")[0] == ".."
        return
    assert not cleaned.startswith("/") and ".." not in cleaned.split("/")
    assert cleaned == "" or posixpath.normpath(cleaned) == cleaned
