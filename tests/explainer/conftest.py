"""The engine tests' builder (a store holding busybox-test:1) for the explain tests."""

from tests.engine.conftest import Builder, Recorder, builder, template_store

__all__ = ["Builder", "Recorder", "builder", "template_store"]
