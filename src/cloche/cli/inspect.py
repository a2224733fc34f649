"""``cloche inspect REF``: manifest, config, history and layer sizes of a stored image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cloche.cli._common import check_root, human_size, root_option


@click.command("inspect")
@click.argument("refs", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", default="json", show_default=True,
              help="json (as `docker image inspect`), text (for people), or a Go template "
                   "applied to each image, e.g. '{{.Id}}', '{{json .Config}}', "
                   "'{{index .RepoDigests 0}}'.")
@root_option
def command(refs: tuple[str, ...], fmt: str, root: Path | None) -> None:
    """Show what the store knows about images (by name, digest or ID), as JSON."""
    from cloche import api
    from cloche.cli._gotemplate import TemplateError, render

    check_root(root)
    docs = [api.inspect(ref, root=root) for ref in refs]
    if fmt == "json":
        click.echo(json.dumps(docs, indent=4))
        return
    if fmt == "text":
        click.echo("\n\n".join(_text(doc) for doc in docs))
        return
    try:
        lines = [render(fmt, doc) for doc in docs]
    except TemplateError as e:
        raise click.UsageError(f"--format: {e}") from None
    for line in lines:
        click.echo(line)


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
