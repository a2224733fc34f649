"""`cloche inspect` prints JSON by default and takes `-f/--format` Go templates, as
`docker image inspect` does: the same templates give the same output as Docker's for the same
image loaded into the Docker engine."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cloche.cli._gotemplate import TemplateError, render

CLOCHE = [sys.executable, "-m", "cloche.cli.main"]

DOC = {"Id": "sha256:abc", "RepoTags": ["a:1", "b:2"], "RepoDigests": [],
       "Config": {"Env": ["A=1", "B=<2>"], "Labels": {"z": "1", "a": "2"}, "User": ""},
       "Size": 10}


@pytest.mark.parametrize(("template", "expected"), [
    ("{{.Id}}", "sha256:abc"),
    ("{{json .Config.Labels}}", '{"a":"2","z":"1"}'),
    ("{{json .Config.Env}}", '["A=1","B=<2>"]'),
    ("{{index .RepoTags 1}}", "b:2"),
    ('{{index .Config.Labels "z"}}', "1"),
    ("{{range .RepoTags}}[{{.}}]{{end}}", "[a:1][b:2]"),
    ("{{range .RepoDigests}}x{{else}}none{{end}}", "none"),
    ("{{if .Config.User}}u{{else}}root{{end}}", "root"),
    ("{{with .Config}}{{len .Env}}{{end}}", "2"),
    ("{{.Config.Labels}}", "map[a:2 z:1]"),
    ("{{.RepoTags}}", "[a:1 b:2]"),
    ("{{.Missing}}", "<no value>"),
    ('{{join .RepoTags ","}}', "a:1,b:2"),
    ("{{.Config.Env | json}}", '["A=1","B=<2>"]'),
    ('{{printf "%s=%d" .Id .Size}}', "sha256:abc=10"),
    ("  {{- .Size -}}  !", "10!"),
    ('{{index (index .Config.Env 0) | upper}}', "A=1"),
])
def test_templates(template: str, expected: str) -> None:
    assert render(template, DOC) == expected


@pytest.mark.parametrize("template", ["{{.Id", "{{end}}", "{{if .Id}}x", "{{nosuch .Id}}",
                                      "{{.Id.Sub}}", "{{index .RepoTags 5}}"])
def test_bad_templates_are_errors(template: str) -> None:
    with pytest.raises(TemplateError):
        render(template, DOC)


def test_deep_nesting_is_bounded() -> None:
    with pytest.raises(TemplateError, match="nested too deeply"):
        render("{{if .Id}}" * 100 + "{{end}}" * 100, DOC)


@pytest.mark.root
@pytest.mark.docker
def test_same_output_as_docker_image_inspect(busybox_rootfs: Path, tmp_path: Path,
                                             docker: str) -> None:
    store = tmp_path / "store"
    tag = f"cloche-inspect-{uuid.uuid4().hex[:8]}:1"
    subprocess.run(CLOCHE + ["import", "--root", str(store), str(busybox_rootfs), tag,
                             "-c", "ENV A=1", "-c", "LABEL b=2 a=1", "-c", "USER 1000",
                             "-c", 'CMD ["sh"]'], check=True, capture_output=True)
    archive = tmp_path / "image.tar"
    subprocess.run(CLOCHE + ["save", "--root", str(store), "--format", "docker", "-o",
                             str(archive), tag], check=True, capture_output=True)
    subprocess.run([docker, "load", "-i", str(archive)], check=True, capture_output=True)
    try:
        default = subprocess.run(CLOCHE + ["inspect", "--root", str(store), tag], check=True,
                                 capture_output=True, text=True).stdout
        assert json.loads(default)[0]["RepoTags"] == [tag]  # JSON by default
        for template in ("{{.Id}}", "{{json .Config.Env}}", "{{json .Config.Labels}}",
                         "{{.Config.User}}", "{{json .Config.Cmd}}", "{{.Os}}/{{.Architecture}}",
                         "{{len .RootFS.Layers}}", "{{index .RootFS.Layers 0}}",
                         "{{index .RepoTags 0}}", "{{range .Config.Env}}{{.}};{{end}}",
                         "{{.Config.Labels}}", '{{index .Config.Labels "a"}}'):
            theirs = subprocess.run([docker, "image", "inspect", "-f", template, tag],
                                    check=True, capture_output=True, text=True).stdout
            ours = subprocess.run(CLOCHE + ["inspect", "--root", str(store), "-f", template,
                                            tag], check=True, capture_output=True, text=True)
            assert ours.stdout == theirs, template
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)
