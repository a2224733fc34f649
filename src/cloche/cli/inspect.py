"""``cloche inspect REF``: manifest, config, history and layer sizes of a stored image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cloche.cli._common import check_root, human_size, root_option


@click.command("inspect")
@click.argument("refs", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="text for people, json as `docker image inspect`.")
@root_option
def command(refs: tuple[str, ...], fmt: str, root: Path | None) -> None:
    """Show what the store knows about images (by name, digest or ID)."""
    from cloche import api

    check_root(root)
    docs = [api.inspect(ref, root=root) for ref in refs]
    if fmt == "json":
        click.echo(json.dumps(docs, indent=4))
        return
    click.echo("\n\n".join(_text(doc) for doc in docs))


def _text(doc: dict[str, Any]) -> str:
    config = doc["Config"]
    lines = [
        f"ID:            {doc['Id']}",
        f"Names:         {', '.join(doc['RepoTags']) or '<none>'}",
        f"Digest:        {doc['Digest']}",
        f"Media type:    {doc['MediaType']}",
        f"Created:       {doc['Created'] or 'N/A'}",
        f"Platform:      {doc['Os']}/{doc['Architecture']}"
        + (f"/{doc['Variant']}" if doc["Variant"] else ""),
    ]
    for key, label in (("User", "User"), ("WorkingDir", "Working dir"),
                       ("Entrypoint", "Entrypoint"), ("Cmd", "Cmd"), ("StopSignal", "Stop signal")):
        if config.get(key):
            value = config[key]
            lines.append(f"{label + ':':<15}{json.dumps(value) if isinstance(value, list) else value}")
    for key, label in (("Env", "Env"), ("ExposedPorts", "Ports"), ("Volumes", "Volumes"),
                       ("Labels", "Labels"), ("OnBuild", "On build")):
        value = config.get(key)
        if not value:
            continue
        items = value if isinstance(value, list) else (
            [f"{k}={v}" for k, v in value.items()] if key == "Labels" else list(value))
        lines.append(f"{label}:")
        lines.extend(f"  {item}" for item in items)
    lines.append(f"Layers ({len(doc['Layers'])}, {human_size(doc['Size'])}):")
    for layer in doc["Layers"]:
        lines.append(f"  {layer['Digest']}  {human_size(layer['Size']):>8}  {layer['MediaType']}")
    lines.append("History:")
    for h in doc["History"]:
        mark = "" if h.get("empty_layer") else " [layer]"
        what = h.get("created_by") or h.get("comment") or ""
        lines.append(f"  {(h.get('created') or '')[:19]}  {what}{mark}")
    return "\n".join(lines)
