"""The runner-to-init contract is typed: what the runner encodes the init decodes to the same
value, and a configuration with a missing, unknown or wrongly typed field is refused at the
boundary with the field's name (not a KeyError inside PID 1)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from cloche.sandbox.initconfig import InitConfig, InitConfigError, InitMount

CONFIG = InitConfig(
    parent_pid=12, status_fd=5, rootfs="/r", argv=("/bin/sh", "-c", "true"),
    env=("PATH=/bin",), cwd="/", uid=1000, gid=1000, groups=(4, 27), hostname="h",
    network="none", init=False, insecure=False, proc="/r/proc", dev="/r/dev", sys="/r/sys",
    files=(("/tmp/hosts", "/r/etc/hosts"),),
    mounts=(InitMount(kind="tmpfs", path="/t", target="/r/t", size=4096, mode=0o1777),
            InitMount(kind="bind", path="/s", target="/r/s", source="/host/s", readonly=True)))


def test_round_trip() -> None:
    assert InitConfig.decode(CONFIG.encode()) == CONFIG


def _raw() -> dict[str, object]:
    return json.loads(CONFIG.encode())


@pytest.mark.parametrize(("change", "word"), [
    (lambda raw: raw.pop("uid"), "uid"),
    (lambda raw: raw.update(extra=1), "extra"),
    (lambda raw: raw.update(uid="0"), "uid"),
    (lambda raw: raw.update(uid=True), "uid"),
    (lambda raw: raw.update(argv="/bin/sh"), "argv"),
    (lambda raw: raw["mounts"][0].update(kind="overlay"), "kind"),
    (lambda raw: raw["mounts"][1].update(readonly="yes"), "readonly"),
])
def test_a_bad_field_is_refused_by_name(change, word: str) -> None:
    raw = _raw()
    change(raw)
    with pytest.raises(InitConfigError, match=word):
        InitConfig.decode(json.dumps(raw).encode())


def test_not_an_object() -> None:
    with pytest.raises(InitConfigError):
        InitConfig.decode(b"[1, 2]")
    with pytest.raises(InitConfigError):
        InitConfig.decode(b"{")


def test_every_field_has_a_type_rule() -> None:
    """A field added to InitConfig must have a type decode knows how to check."""
    from cloche.sandbox.initconfig import _TYPES

    for cls in (InitConfig, InitMount):
        for f in dataclasses.fields(cls):
            kind = str(f.type)
            assert kind in _TYPES or kind.startswith(("tuple", "Literal")), (cls, f.name)
