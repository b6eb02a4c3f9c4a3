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


def _gpu_here() -> str:
    """'' when an NVIDIA GPU answers, else why not (the skip reason of tests marked gpu)."""
    import glob
    import shutil
    import subprocess

    try:  # a Jetson before JetPack 6 has no nvidia-smi: its device tree says what it is
        if b"nvidia,tegra" in Path("/proc/device-tree/compatible").read_bytes() or glob.glob("/dev/nvhost-*"):
            return ""
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    if not smi:
        return "no NVIDIA GPU here (no nvidia-smi, no Jetson); make test-gpu on a GPU machine runs these"
    try:
        subprocess.run([smi, "-L"], check=True, capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"nvidia-smi fails ({exc}); no usable GPU"
    return ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    why = None
    for item in items:
        if item.get_closest_marker("gpu") is None:
            continue
        why = _gpu_here() if why is None else why
        if why:
            item.add_marker(pytest.mark.skip(reason=why))
