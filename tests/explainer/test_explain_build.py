"""``cloche explain`` of images cloche builds from the busybox base: leaks (a token as ARG
versus a secret mount, a file deleted in a later layer, credential files, keys, .git),
waste, the command, USER and WORKDIR checks, the JSON schema, images read from the store and
from an archive, the CLI's exit codes and ``cloche build --explain``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cloche import api
from cloche.engine.options import BuildOptions, SecretSpec
from cloche.explainer import Report
from cloche.explainer.model import SCHEMA, check_schema
from tests.engine.conftest import BASE, Builder

pytestmark = pytest.mark.root

TOKEN = "ghp_9fK2xQ7LmZ4pR8vT1nW6yB3cH5jD0sA2eU7i"  # shaped like a GitHub token, random


def _explain(builder: Builder, dockerfile: str, files: dict[str, str | bytes] | None = None,
             **options: object) -> Report:
    ctx = builder.context(dockerfile, files or {})
    return api.explain(BuildOptions(context=str(ctx), root=builder.root, **options))  # type: ignore[arg-type]


def _rules(report: Report, kind: str | None = None) -> list[str]:
    return [f.rule for f in report.findings if kind is None or f.kind == kind]


def test_a_token_passed_as_arg_is_flagged_a_secret_mount_is_not(builder: Builder,
                                                                tmp_path: Path) -> None:
    as_arg = _explain(builder, f"""FROM {BASE}
ARG GITHUB_TOKEN
RUN test -n "$GITHUB_TOKEN" && echo fetched > /data
CMD ["cat", "/data"]
""", build_args={"GITHUB_TOKEN": TOKEN})
    leaks = [f for f in as_arg.findings if f.kind == "leak"]
    assert [f.rule for f in leaks] == ["secret-build-arg"]
    assert leaks[0].where == "history" and "GITHUB_TOKEN" in leaks[0].message
    assert TOKEN not in leaks[0].message  # never printed whole
    # the ARG's history line (BuildKit's "ARG NAME=value") and the RUN's ("RUN |1 NAME=value
    # cmd") both hold it: one finding, at the first
    assert leaks[0].instruction is not None and \
        leaks[0].instruction.startswith(("ARG GITHUB_TOKEN=", "RUN |1 GITHUB_TOKEN="))
    assert as_arg.failed(["leak"])

    secret = tmp_path / "token"
    secret.write_text(TOKEN)
    as_secret = _explain(builder, f"""FROM {BASE}
RUN --mount=type=secret,id=github_token test -s /run/secrets/github_token && echo ok > /data
CMD ["cat", "/data"]
""", secrets=(SecretSpec("github_token", src=str(secret)),))
    assert _rules(as_secret, "leak") == [] and not as_secret.failed(["leak"])
    assert as_secret.findings == ()


def test_a_file_deleted_in_the_next_layer_is_flagged_with_its_size(builder: Builder) -> None:
    report = _explain(builder, f"""FROM {BASE}
RUN dd if=/dev/zero of=/tmp/blob bs=1024 count=300 2>/dev/null
RUN rm /tmp/blob
CMD ["true"]
""")
    [finding] = [f for f in report.findings if f.rule == "deleted-file"]
    assert finding.kind == "waste" and finding.path == "/tmp/blob"
    assert finding.size == 300 * 1024
    assert finding.line == 2 and finding.instruction is not None and \
        finding.instruction.startswith("RUN dd ")
    assert "RUN rm /tmp/blob" in finding.message


def test_a_deleted_credential_file_is_a_leak(builder: Builder) -> None:
    report = _explain(builder, f"""FROM {BASE}
COPY .npmrc /root/.npmrc
RUN rm /root/.npmrc
CMD ["true"]
""", {".npmrc": "//registry.npmjs.org/:_authToken=npm_abcdefghijklmnopqrstuvwxyz0123456789\n"})
    [finding] = [f for f in report.findings if f.rule == "deleted-secret"]
    assert finding.kind == "leak" and finding.path == "/root/.npmrc"
    assert finding.instruction == "COPY .npmrc /root/.npmrc"


def test_an_entrypoint_that_does_not_exist(builder: Builder) -> None:
    report = _explain(builder, f"""FROM {BASE}
ENTRYPOINT ["/usr/local/bin/server", "--port", "80"]
""")
    [finding] = [f for f in report.findings if f.kind == "runtime"]
    assert finding.rule == "entrypoint-missing" and finding.path == "/usr/local/bin/server"
    assert finding.instruction is not None and finding.instruction.startswith("ENTRYPOINT")
    assert report.failed(["runtime"]) and report.failed(["any"])


def test_commands_found_through_path_and_shell_form(builder: Builder) -> None:
    ok = _explain(builder, f"""FROM {BASE}
CMD echo hello
""")  # shell form: /bin/sh is busybox
    assert _rules(ok, "runtime") == []
    report = _explain(builder, f"""FROM {BASE}
CMD ["nosuchprogram"]
""")
    [finding] = [f for f in report.findings if f.kind == "runtime"]
    assert finding.rule == "entrypoint-missing" and "PATH" in finding.message
    text_file = _explain(builder, f"""FROM {BASE}
COPY --chmod=755 notes.txt /app
ENTRYPOINT ["/app"]
""", {"notes.txt": "not a program\n"})
    assert _rules(text_file, "runtime") == ["entrypoint-not-a-program"]
    script = _explain(builder, f"""FROM {BASE}
COPY --chmod=755 run.sh /run.sh
ENTRYPOINT ["/run.sh"]
""", {"run.sh": "#!/bin/bash\necho hi\n"})
    assert _rules(script, "runtime") == ["entrypoint-interpreter-missing"]


def test_user_and_workdir(builder: Builder) -> None:
    report = _explain(builder, f"""FROM {BASE}
USER nosuchuser
CMD ["true"]
""")
    assert _rules(report, "runtime") == ["user-missing"]
    fine = _explain(builder, f"""FROM {BASE}
USER app:staff
WORKDIR /home/app
CMD ["true"]
""")
    assert _rules(fine, "runtime") == []
    numeric = _explain(builder, f"""FROM {BASE}
USER 4242:4242
CMD ["true"]
""")
    assert _rules(numeric, "runtime") == []


def test_a_dynamic_binary_and_its_missing_library(builder: Builder) -> None:
    """A host binary (Debian's /bin/true: glibc, libc.so.6) copied into the busybox image,
    first with no loader, then with the loader but no libc."""
    true = Path("/bin/true").read_bytes()
    loader = Path("/lib64/ld-linux-x86-64.so.2").resolve().read_bytes()
    report = _explain(builder, f"""FROM {BASE}
COPY --chmod=755 true /app/true
CMD ["/app/true"]
""", {"true": true})
    [finding] = [f for f in report.findings if f.kind == "runtime"]
    assert finding.rule == "interpreter-missing" and finding.path == "/app/true"
    assert "glibc" in finding.message and finding.line == 2
    with_loader = _explain(builder, f"""FROM {BASE}
COPY --chmod=755 true /app/true
COPY --chmod=755 ld.so /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
RUN mkdir -p /lib64 && ln -s /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 /lib64/
CMD ["/app/true"]
""", {"true": true, "ld.so": loader})
    missing = [f for f in with_loader.findings if f.kind == "runtime"]
    assert [f.rule for f in missing] == ["library-missing"]
    assert "libc.so.6" in missing[0].message and missing[0].path == "/app/true"


def test_credential_files_keys_vcs_and_waste(builder: Builder) -> None:
    key = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
           "-----END OPENSSH PRIVATE KEY-----\n")
    report = _explain(builder, f"""FROM {BASE}
COPY . /src
RUN mkdir -p /var/lib/apt/lists && dd if=/dev/zero of=/var/lib/apt/lists/big bs=1024 count=50
CMD ["true"]
""", {".git/HEAD": "ref: refs/heads/main\n", ".git/config": "[core]\n", "deploy.pem": key,
      ".env": "DB_PASSWORD=x\n", "app.txt": "hello\n"})
    by_rule = {f.rule: f for f in report.findings}
    assert by_rule["secret-file"].path == "/src/.env"
    assert by_rule["private-key"].path == "/src/deploy.pem"
    assert by_rule["vcs-folder"].path == "/src/.git" and by_rule["vcs-folder"].kind == "leak"
    assert by_rule["source-tree"].path == "/src/Dockerfile"
    waste = by_rule["apt-lists"]
    assert waste.kind == "waste" and waste.size == 50 * 1024 and waste.line == 3


def test_skipped_stages_and_weights(builder: Builder) -> None:
    report = _explain(builder, f"""FROM {BASE} AS tools
RUN dd if=/dev/zero of=/tool bs=1024 count=200
FROM {BASE} AS unused
RUN true
FROM tools AS app
RUN echo app > /app
FROM {BASE}
COPY --from=app /app /app
CMD ["cat", "/app"]
""")
    stages = {s.index: s for s in report.stages}
    assert stages[1].ships == "skipped" and stages[1].skipped
    assert stages[0].ships == "no" and stages[0].shipped_size == 0
    assert stages[2].ships == "copied" and stages[2].base_stage == 0
    assert stages[2].shipped_size == stages[3].layers[0].size
    assert stages[0].added_size >= 200 * 1024
    assert stages[2].base_size >= stages[0].size  # built on the tools stage
    assert stages[3].ships == "final"
    assert [(s.how, s.name) for s in report.sources] == [("FROM", BASE), ("COPY --from", "app")]
    assert [layer.stage for layer in report.layers] == [f"base {BASE}", "stage 3"]


def test_the_json_output_follows_the_documented_schema(builder: Builder) -> None:
    ctx = builder.context(f"""FROM {BASE} AS build
ARG API_KEY
RUN echo "$API_KEY" > /dev/null && echo built > /out
FROM {BASE}
COPY --from=build /out /out
RUN dd if=/dev/zero of=/big bs=1024 count=10 && rm /big
ENTRYPOINT ["/missing"]
""")
    proc = builder.cli("explain", "--format", "json", "--build-arg", "API_KEY=k", str(ctx))
    document = json.loads(proc.stdout)
    assert check_schema(document) == []
    assert document["counts"]["runtime"] == 1
    assert {s["name"] for s in document["stages"]} == {"build", None}
    # the example in docs/explain.md is valid too, and the schema there is SCHEMA
    docs = (Path(__file__).resolve().parents[2] / "docs" / "explain.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", docs, re.S)
    assert len(blocks) >= 2
    assert json.loads(blocks[0]) == SCHEMA
    assert check_schema(json.loads(blocks[1])) == []
    # and the checker does catch a broken document
    broken = dict(document, findings=[{"kind": "oops", "rule": "x"}])
    assert len(check_schema(broken)) == 2


def test_explain_an_image_from_the_store_and_from_an_archive(builder: Builder,
                                                             tmp_path: Path) -> None:
    ctx = builder.context(f"""FROM {BASE}
ARG NPM_TOKEN
RUN echo "$NPM_TOKEN" > /dev/null
ENTRYPOINT ["/app/server"]
""")
    builder.cli("build", "-t", "leaky:1", "--build-arg", f"NPM_TOKEN={TOKEN}", str(ctx))
    stored = api.explain("leaky:1", root=builder.root)
    assert not stored.built and len(stored.stages) == 1
    assert sorted(_rules(stored)) == ["entrypoint-missing", "secret-build-arg"]
    archive = tmp_path / "leaky.tar"
    api.save("leaky:1", archive, root=builder.root)
    from_archive = api.explain(f"oci-archive:{archive}", root=builder.root)
    assert from_archive.image == stored.image
    assert _rules(from_archive) == _rules(stored)
    docker = tmp_path / "leaky-docker.tar"
    api.save("leaky:1", docker, format="docker", root=builder.root)
    assert _rules(api.explain(f"docker-archive:{docker}", root=builder.root)) == \
        _rules(stored)


def test_cli_fail_on_exit_codes_and_text(builder: Builder) -> None:
    ctx = builder.context(f"""FROM {BASE}
ENTRYPOINT ["/nope"]
""")
    ok = builder.cli("explain", "--fail-on", "leak", str(ctx))
    assert "entrypoint-missing" in ok.stdout and "stages:" in ok.stdout
    failed = builder.cli("explain", "--fail-on", "runtime", str(ctx), check=False)
    assert failed.returncode == 3, failed.stderr
    anything = builder.cli("explain", "--fail-on", "any", "--format", "json", str(ctx),
                           check=False)
    assert anything.returncode == 3 and json.loads(anything.stdout)["counts"]["runtime"] == 1


def test_build_explain_prints_a_summary(builder: Builder) -> None:
    ctx = builder.context(f"""FROM {BASE}
RUN dd if=/dev/zero of=/tmp/x bs=1024 count=20
RUN rm /tmp/x
ENTRYPOINT ["/nope"]
""")
    proc = builder.cli("build", "--explain", "--progress", "quiet", str(ctx))
    assert "explain:" in proc.stdout
    assert "entrypoint-missing" in proc.stdout and "deleted-file" in proc.stdout


def test_findings_of_one_rule_are_capped_biggest_first(builder: Builder) -> None:
    report = _explain(builder, f"""FROM {BASE}
RUN i=0; while [ $i -lt 60 ]; do i=$((i+1)); head -c $((i * 100)) /dev/zero > /tmp/f$i; done
RUN rm /tmp/f*
CMD ["true"]
""")
    deleted = [f for f in report.findings if f.rule == "deleted-file"]
    assert len(deleted) == 51
    assert [f.size for f in deleted[:3]] == [6000, 5900, 5800]
    assert deleted[-1].message.startswith("... and 10 more deleted-file findings")
    assert deleted[-1].size == sum(i * 100 for i in range(1, 11))
