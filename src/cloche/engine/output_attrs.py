"""The ``-o/--output`` attributes BuildKit's exporters take: each is honoured or refused.

A CI script written for ``docker buildx build`` may pass any attribute of BuildKit's image,
oci, docker, local and tar exporters. cloche must never drop one silently: an attribute it
honours is listed in ``HONOURED`` (with the values it takes); one BuildKit knows and cloche
does not do, or a value cloche does not do (``compression=estargz``), is an error that names
the attribute, the output type and what cloche does instead; an attribute no exporter knows is
an error too, as BuildKit makes it. ``compression_of`` reads the layer compression attributes
(``compression``, ``compression-level``, ``force-compression``) as BuildKit's exporters do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from cloche.errors import ConfigError

if TYPE_CHECKING:
    from cloche.store.compressed import OutputCompression

_TRUE = ("true", "1", "")
_BOOL = ("true", "false", "1", "0", "")

# attribute -> the values cloche honours (None: any value); per output type
_COMPRESSIONS = ("gzip", "zstd", "uncompressed")  # estargz: refused
_COMMON_ARCHIVE = {
    "compression": _COMPRESSIONS,  # the layers an archive (or a push) writes: compression_of
    "compression-level": None,  # an integer in the algorithm's range: compression_of
    "force-compression": _BOOL,
    "oci-mediatypes": ("true", "1", ""),  # cloche writes OCI media types
    "tar": _BOOL,  # tar=false: an OCI layout folder at dest
    "rewrite-timestamp": _BOOL,
    "source-date-epoch": None,  # checked by engine/reproducible.py
}
HONOURED: dict[str, dict[str, tuple[str, ...] | None]] = {
    "image": {"compression": _COMPRESSIONS, "compression-level": None,
              "force-compression": _BOOL, "oci-mediatypes": ("true", "1", ""),
              "store": _TRUE, "unpack": ("false", "0"), "rewrite-timestamp": _BOOL,
              "source-date-epoch": None},
    "oci": dict(_COMMON_ARCHIVE),
    "docker": dict(_COMMON_ARCHIVE),
    "local": {"source-date-epoch": None},
    "tar": {"source-date-epoch": None},
}

# what BuildKit's exporters take besides name, push and dest (v0.23); prefixes end with "."
KNOWN = {
    "image": ("push-by-digest", "registry.insecure", "dangling-name-prefix", "name-canonical",
              "compression", "compression-level", "force-compression", "oci-mediatypes",
              "oci-artifact", "unpack", "store", "rewrite-timestamp", "buildinfo",
              "buildinfo-attrs", "attestation-inline", "annotation", "annotation.",
              "annotation-index.", "annotation-manifest.", "annotation-index-descriptor.",
              "annotation-manifest-descriptor."),
    "oci": ("tar", "compression", "compression-level", "force-compression", "oci-mediatypes",
            "oci-artifact", "rewrite-timestamp", "buildinfo", "buildinfo-attrs", "annotation",
            "annotation.", "annotation-index.", "annotation-manifest.",
            "annotation-index-descriptor.", "annotation-manifest-descriptor."),
    "local": ("platform-split",),
    "tar": ("platform-split",),
}
KNOWN["docker"] = KNOWN["oci"]


# annotations (engine/annotations.py): any key, any value
ANNOTATION_PREFIXES = {"image": ("annotation.", "annotation-manifest."),
                       "oci": ("annotation.", "annotation-manifest.",
                               "annotation-manifest-descriptor."),
                       "docker": ("annotation.", "annotation-manifest.",
                                  "annotation-manifest-descriptor.")}


def check_output_attrs(kind: str, attrs: dict[str, str], text: str) -> None:
    """ConfigError for an attribute of ``--output text`` that cloche would not honour."""
    _check_attrs(kind, attrs, text)
    if kind in ("image", "oci", "docker"):
        compression_of(attrs, text)  # a bad compression-level fails before the build


def _check_attrs(kind: str, attrs: dict[str, str], text: str) -> None:
    honoured = HONOURED.get(kind, {})
    for key, value in sorted(attrs.items()):
        prefix = next((p for p in ANNOTATION_PREFIXES.get(kind, ()) if key.startswith(p)), None)
        if prefix is not None and len(key) > len(prefix) and "[" not in key:
            continue
        if key in honoured:
            allowed = honoured[key]
            if allowed is None or value.lower() in allowed:
                continue
            raise ConfigError(
                f"--output {text!r}: {key}={value} is not supported for type={kind}",
                hint=f"cloche takes {key}=" + "|".join(v for v in allowed if v)
                     + " here (docs/outputs.md)")
        known = KNOWN.get(kind, ())
        if key in known or any(p.endswith(".") and key.startswith(p) for p in known):
            raise ConfigError(f"--output {text!r}: BuildKit's {key}= is not supported by "
                              f"cloche for type={kind}", hint="see docs/outputs.md for the "
                              "attributes cloche takes")
        raise ConfigError(f"--output {text!r}: unknown attribute {key!r} for type={kind}")


# BuildKit's gzip levels are Go's compress/gzip ones (-2 Huffman only, -1 default, 0 stored,
# 1 fastest .. 9 smallest); cloche's gzip writer is ISA-L's, levels 0..3: each Go level goes to
# the ISA-L level of its speed and size class (0 and -2, which ISA-L has not, to its fastest)
_GZIP_LEVELS = {-2: 0, -1: None, 0: 0, 1: 1, 2: 1, 3: 1, 4: 2, 5: 2, 6: 2, 7: 3, 8: 3, 9: 3}


def _zstd_level(level: int) -> int | None:
    """BuildKit's zstd writer (klauspost/compress) has four speeds, chosen from the level as
    its exporter does: below 0 the default, 0-2 fastest, 3-6 default, 7-8 better, 9 and
    above best; libzstd's levels that match them are 1, 3, 7 and 11."""
    if level < 0:
        return None
    return 1 if level < 3 else 3 if level < 7 else 7 if level < 9 else 11


def compression_of(attrs: Mapping[str, str], text: str = "",
                   default: str | None = "gzip") -> OutputCompression | None:
    """The layer compression an output's attributes ask for, as BuildKit reads them
    (``compression=`` else ``default``; ``compression-level=N`` mapped onto cloche's
    writers; ``force-compression`` with an empty value is true). None when ``default`` is
    None and no compression attribute is given (the output keeps the layers as stored)."""
    from cloche.compression import Compression
    from cloche.store.compressed import OutputCompression

    keys = ("compression", "compression-level", "force-compression")
    if default is None and not any(k in attrs for k in keys):
        return None
    name = attrs.get("compression", default or "gzip").lower()
    compression = Compression.parse(name)
    force = attrs.get("force-compression", "false").lower() in _TRUE
    level: int | None = None
    raw = attrs.get("compression-level")
    if raw is not None:
        try:
            given = int(raw.strip(), 10)
        except ValueError:
            raise ConfigError(f"--output {text!r}: compression-level={raw} is not an "
                              "integer") from None
        if compression is Compression.GZIP:
            if given not in _GZIP_LEVELS:
                raise ConfigError(f"--output {text!r}: compression-level={given} is out of "
                                  "gzip's range", hint="gzip takes -2..9 (docs/outputs.md)")
            level = _GZIP_LEVELS[given]
        elif compression is Compression.ZSTD:
            level = _zstd_level(given)
        # uncompressed: BuildKit ignores the level
    return OutputCompression(compression, level, force)
