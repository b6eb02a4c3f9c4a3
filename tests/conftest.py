"""Shared fixtures: bundles exported once per session from random weights (nothing downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a model hub: a download attempt fails at once with the offline error.
os.environ.setdefault("EDGEKIT_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def export_bundle(tmp_path_factory: pytest.TempPathFactory):
    """export_bundle(model, **options) -> bundle path, cached per argument set."""
    from edgekit.export import ExportRequest, export

    cache: dict[tuple, Path] = {}

    def make(model: str, **kw) -> Path:
        key = (model, tuple(sorted(kw.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp("bundles") / model
            kw.setdefault("weights", "random")
            cache[key] = export(ExportRequest(model, out, **kw)).bundle
        return cache[key]

    return make


@pytest.fixture(scope="session")
def googlenet_bundle(export_bundle) -> Path:
    return export_bundle("googlenet")
