"""How big one layer may get once expanded: ``CLOCHE_MAX_LAYER_SIZE`` (default 64 GiB).

A layer is a compressed tar from anyone. Compression ratios of 1,000 (gzip) to millions
(zstd) and sparse tar members (a 99-byte layer that says "2 GiB of zeros") let a small blob
ask for any amount of disk or hashing time. Each layer's *expanded* size is bounded: the
bytes of its uncompressed tar, plus the holes of its sparse files (what their content would
take if written out), so neither a bomb nor a huge sparse file gets through. Docker and
BuildKit have no such bound; 64 GiB is far above any real layer (Docker Hub's largest
images hold layers of a few GiB) and still stops a runaway before the disk fills up.

The value is bytes, or a number with a suffix K, M, G or T (powers of 1,024); ``0`` or
``none`` turns the bound off.
"""

from __future__ import annotations

import os

from cloche.errors import ConfigError, LayerError

__all__ = ["DEFAULT_MAX_LAYER_SIZE", "ENV_MAX_LAYER_SIZE", "LayerTooLargeError", "human_size",
           "max_layer_size", "parse_size", "too_large"]

DEFAULT_MAX_LAYER_SIZE = 64 << 30
ENV_MAX_LAYER_SIZE = "CLOCHE_MAX_LAYER_SIZE"
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
UNBOUNDED = 1 << 62


class LayerTooLargeError(LayerError):
    """A layer that expands to more than ``max_layer_size()`` bytes."""


def parse_size(text: str, what: str) -> int:
    """``text`` as bytes: digits with an optional K/M/G/T suffix (KiB, MiB...)."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = value, ""
    if value and value[-1] in _UNITS:
        number, unit = value[:-1], value[-1]
    if not number.isdigit():
        raise ConfigError(f"{what}: {text!r} is not a size",
                          hint="give bytes, or a number with K, M, G or T (64G)")
    return int(number) * _UNITS[unit]


def max_layer_size() -> int:
    """The bound from ``CLOCHE_MAX_LAYER_SIZE``, else the default (no bound: a huge number)."""
    text = os.environ.get(ENV_MAX_LAYER_SIZE, "").strip()
    if not text:
        return DEFAULT_MAX_LAYER_SIZE
    if text.lower() == "none":
        return UNBOUNDED
    size = parse_size(text, ENV_MAX_LAYER_SIZE)
    return size or UNBOUNDED


def human_size(size: int) -> str:
    """``size`` bytes as the largest whole unit that fits (64 GiB), else plain bytes."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def too_large(limit: int) -> LayerTooLargeError:
    """The error for a layer (or an ADD archive) that expands past ``limit``; the caller
    prefixes what it is (``layer sha256:...``)."""
    return LayerTooLargeError(
        f"the tar expands to more than {human_size(limit)} ({ENV_MAX_LAYER_SIZE}: counting "
        "its uncompressed bytes and the holes of its sparse files)",
        hint=f"a compression or sparse-file bomb, or a huge layer: set {ENV_MAX_LAYER_SIZE} "
             "higher (e.g. 200G) to allow it")


def seconds_from_env(name: str, default: float, example: str) -> float:
    """A timeout from the environment variable ``name`` (seconds, > 0, finite), else
    ``default``; a ConfigError naming the variable for anything else."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name}={text!r} is not a number of seconds",
                          hint=f"e.g. {name}={example}")
    return value
