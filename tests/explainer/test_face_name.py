"""``cloche.explain`` is the face's function, also once the ``cloche.explainer`` package is
loaded (a subpackage named ``explain`` would have replaced it as an attribute of ``cloche``)."""

from __future__ import annotations

import importlib

import cloche


def test_cloche_explain_stays_the_function_once_the_package_is_loaded() -> None:
    importlib.import_module("cloche.explainer.core")
    assert callable(cloche.explain) and cloche.explain.__module__ == "cloche.api"
    assert "explain" in cloche.__all__
