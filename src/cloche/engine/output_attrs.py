"""The ``-o/--output`` attributes BuildKit's exporters take: each is honoured or refused.

A CI script written for ``docker buildx build`` may pass any attribute of BuildKit's image,
oci, docker, local and tar exporters. cloche must never drop one silently: an attribute it
honours is listed in ``HONOURED`` (with the values it takes); one BuildKit knows and cloche
does not do, or a value cloche does not do (``compression=zstd``), is an error that names the
attribute, the output type and what cloche does instead; an attribute no exporter knows is an
error too, as BuildKit makes it.
"""

from __future__ import annotations

from cloche.errors import ConfigError

_TRUE = ("true", "1", "")
_BOOL = ("true", "false", "1", "0", "")

# attribute -> the values cloche honours (None: any value); per output type
_COMMON_ARCHIVE = {
    "compression": ("gzip",),  # what cloche writes: an archive's and a push's layers
    "force-compression": ("false", "0"),
    "oci-mediatypes": ("true", "1", ""),  # cloche writes OCI media types
    "tar": _BOOL,  # tar=false: an OCI layout folder at dest
    "rewrite-timestamp": _BOOL,
    "source-date-epoch": None,  # checked by engine/reproducible.py
}
HONOURED: dict[str, dict[str, tuple[str, ...] | None]] = {
    "image": {"compression": ("gzip",), "force-compression": ("false", "0"),
              "oci-mediatypes": ("true", "1", ""), "store": _TRUE, "unpack": ("false", "0"),
              "rewrite-timestamp": _BOOL, "source-date-epoch": None},
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
