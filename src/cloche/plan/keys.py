"""Cache keys of build steps: computed before a step runs, from what can change its result.

A key chains the key of the step before it (down to the base image's manifest digest, or
``scratch``, or the parent stage's last key), the instruction after expansion, the variables
the step can see, and step-specific inputs: for COPY/ADD the content hash of the sources
(path, type, mode, owner, size, content, link target; never mtimes, BuildKit's rule), for a
``--from`` source the key of that stage. Secret values never enter a key: a secret mount
contributes its id only, as the instruction's mount spec does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

KEY_VERSION = "cloche-step-v2"  # v2: no-op steps have an empty layer


def _digest(parts: object) -> str:
    data = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(data.encode("utf-8", "surrogateescape")).hexdigest()


def base_key(kind: str, identity: str, platform: str) -> str:
    """The key a stage starts from: an image digest, scratch, or a parent stage's key."""
    return _digest([KEY_VERSION, "base", kind, identity, platform])


def step_key(parent: str, instruction: str, variables: Mapping[str, str],
             extra: Sequence[str] = ()) -> str:
    """The key of one step. ``instruction`` is the expanded instruction's canonical text."""
    return _digest([KEY_VERSION, parent, instruction, sorted(variables.items()), list(extra)])
