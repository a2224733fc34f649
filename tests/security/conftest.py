"""Fixtures of the security tests, re-used from the engine, registry and sandbox suites."""

from __future__ import annotations

from tests.engine.conftest import Builder, Recorder, builder, template_store
from tests.registry.conftest import client, dst_blobs, make_client, make_proxy, src_blobs
from tests.sandbox.conftest import Layer, layer, scratch_layer, scratch_like_rootfs

__all__ = ["Builder", "Layer", "Recorder", "builder", "client", "dst_blobs", "layer", "make_client",
           "make_proxy", "scratch_layer", "scratch_like_rootfs", "src_blobs", "template_store"]
