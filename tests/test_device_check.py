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
