"""`make device-check` is ready for the first GPU: it runs here too, and says for every step
what ran, what failed and what could not run and why, in one JSON file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STEPS = {"machine", "cuda_layer", "gpu_tests", "engine_parity", "bench"}


def test_every_step_is_accounted_for(tmp_path):
    out = tmp_path / "dc.json"
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "device_check.py"), "--out", str(out),
                          "--budget", "300"], capture_output=True, text=True, timeout=400, cwd=REPO)
    report = json.loads(out.read_text())
    assert set(report["steps"]) | set(report["not_run"]) == STEPS
    assert not set(report["steps"]) & set(report["not_run"])
    assert all(why for why in report["not_run"].values())  # a reason for each
    assert report["steps"]["machine"]["ok"] and report["machine"]["python"]
    assert "device check:" in res.stdout and all(step in res.stdout for step in STEPS)
    assert res.returncode == (0 if all(s["ok"] for s in report["steps"].values()) else 1)


def _device_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("device_check", REPO / "benchmarks" / "device_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _driver(count: int, name: str = "cuda.bindings.driver"):
    import types

    ok = "CUDA_SUCCESS"
    return types.SimpleNamespace(CUresult=types.SimpleNamespace(CUDA_SUCCESS=ok), cuInit=lambda flags: (ok,),
                                 cuDeviceGetCount=lambda: (ok, count), __name__=name)


def test_a_jetson_without_nvidia_smi_has_a_gpu(tmp_path, monkeypatch):
    """JetPack 5 has no nvidia-smi: the device tree, /dev/nvhost-* or the CUDA driver say a GPU is there."""
    dc = _device_check()
    monkeypatch.setattr(dc.shutil, "which", lambda name: None)
    for name in ("cuda.bindings.driver", "cuda.cuda"):
        monkeypatch.setitem(sys.modules, name, None)  # no cuda-python
    assert "no nvidia-smi" in dc._gpu(tmp_path)
    dt = tmp_path / "proc" / "device-tree"
    dt.mkdir(parents=True)
    (dt / "compatible").write_bytes(b"nvidia,p3509-0000+p3767-0000\0nvidia,p3767-0000\0nvidia,tegra234\0")
    assert dc._gpu(tmp_path) == ""  # Orin NX on JetPack 5
    nodes = tmp_path / "nodes"
    (nodes / "dev").mkdir(parents=True)
    (nodes / "dev" / "nvhost-ctrl-gpu").write_bytes(b"")
    assert dc._gpu(nodes) == ""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setitem(sys.modules, "cuda.cuda", _driver(1, "cuda.cuda"))  # cuda-python before 12.6.1
    assert dc._gpu(empty) == ""
    monkeypatch.setitem(sys.modules, "cuda.bindings.driver", _driver(0))
    assert "cuDeviceGetCount" in dc._gpu(empty)
