"""The Go proof of ``cloche explain``, with images built by cloche from the classic example's
bases (tests/fixtures/golang.py: a Debian golang image, a distroless/static-like image).

The same program, which imports ``net`` and ``os/user`` (their cgo variants call glibc), is
built twice: with cgo the Go linker makes a dynamic binary (PT_INTERP
/lib64/ld-linux-x86-64.so.2, DT_NEEDED libc.so.6; the golang image has no gcc, so the std
packages' prebuilt cgo archives are linked internally), which the distroless/static image
cannot start; with CGO_ENABLED=0 a static one, which it can.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cloche import api
from cloche.engine.options import BuildOptions
from cloche.explainer import Report
from cloche.explainer.imagefs import ImageFS
from cloche.store import Store
from tests.fixtures.golang import GoBaseImages

pytestmark = [pytest.mark.root, pytest.mark.registry, pytest.mark.timeout(3600)]

MAIN_GO = """package main

import (
\t"fmt"
\t"net"
\t"os/user"
)

func main() {
\tu, err := user.Current()
\taddrs, _ := net.LookupHost("localhost")
\tfmt.Println(u, err, addrs)
}
"""
DOCKERFILE = """ARG GOLANG_IMAGE
ARG RUNTIME_IMAGE
FROM ${GOLANG_IMAGE} AS build
WORKDIR /src
COPY go.mod main.go ./
ARG CGO
RUN CGO_ENABLED=$CGO go build -o /out/app .

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/app /app
USER nonroot
ENTRYPOINT ["/app"]
"""


def _explain(bases: GoBaseImages, tmp_path: Path, cgo: str) -> Report:
    ctx = tmp_path / f"cgo{cgo}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "go.mod").write_text("module app\n\ngo 1.19\n")
    (ctx / "main.go").write_text(MAIN_GO)
    options = BuildOptions(context=str(ctx), root=bases.store, build_args={
        "GOLANG_IMAGE": bases.golang, "RUNTIME_IMAGE": bases.runtime, "CGO": cgo})
    return api.explain(options)


def test_cgo_binary_in_distroless_static_is_flagged(go_base_images: GoBaseImages,
                                                   tmp_path: Path) -> None:
    report = _explain(go_base_images, tmp_path, "1")
    # the binary really is the dynamic one
    image = Store.open(go_base_images.store).image(report.image)
    fs = ImageFS.read(image.layers)
    elf = fs.nodes["app"].elf
    assert elf is not None and elf.interpreter == "/lib64/ld-linux-x86-64.so.2" and elf.go
    assert "libc.so.6" in elf.needed
    missing = [f for f in report.findings if f.rule == "interpreter-missing"]
    assert len(missing) == 1, report.findings
    finding = missing[0]
    assert finding.kind == "runtime" and finding.path == "/app"
    assert "(the entrypoint)" in finding.message
    assert "no dynamic loader" in finding.message
    assert finding.stage == "stage 1" and finding.line == 10
    assert finding.instruction == "COPY --from=build /out/app /app"
    assert finding.fix is not None and "CGO_ENABLED=0" in finding.fix
    assert report.failed(["runtime"]) and not report.failed(["leak"])
    # weights: the build stage ships the binary only, by COPY --from
    build, final = report.stages
    assert (build.name, build.ships, final.ships) == ("build", "copied", "final")
    assert build.shipped_size == final.layers[0].size > 0
    assert build.size > 50 * final.added_size  # the toolchain stays behind
    assert [s.how for s in report.sources] == ["FROM", "COPY --from"]


def test_static_binary_in_distroless_static_is_clean(go_base_images: GoBaseImages,
                                                     tmp_path: Path) -> None:
    report = _explain(go_base_images, tmp_path, "0")
    image = Store.open(go_base_images.store).image(report.image)
    elf = ImageFS.read(image.layers).nodes["app"].elf
    assert elf is not None and elf.interpreter is None and elf.needed == ()
    assert [f for f in report.findings if f.kind == "runtime"] == []
    assert not report.failed(["runtime", "leak"]), report.findings
    # the runtime base alone, from the registry (docker://): nothing to say but its layers
    base = api.explain(f"docker://{go_base_images.runtime}", root=go_base_images.store)
    assert not base.built and base.reference == go_base_images.runtime
    assert base.findings == () and len(base.layers) == len(base.stages[0].layers) >= 1
