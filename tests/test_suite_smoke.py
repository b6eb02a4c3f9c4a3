"""The benchmark suite end to end, small: one model, batch 1, few runs (CI's smoke of `make bench`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_suite_smoke_writes_results_and_plots(tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("matplotlib")
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks/suite.py"), "--smoke", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "[1/1] googlenet done" in res.stdout
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| googlenet |" in text and "chosen CPU path (backend auto)" in text and "Versions: python" in text
    assert "CPU: x86" in text or "CPU: arm64" in text  # the CPU's kind and flags beside the figures
    data = json.loads((tmp_path / "results.json").read_text())
    rows = {(r["backend"], r["precision"]) for r in data["models"][0]["rows"]}
    assert {("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8-cpu"), ("openvino", "fp32"),
            ("openvino", "int8-cpu")} <= rows
    auto = [r for r in data["models"][0]["rows"] if r["backend"].startswith("auto:")]
    assert auto and auto[0]["backend"] in ("auto:onnxruntime", "auto:openvino"), rows
    assert re.search(r"^\| googlenet \| 1 \| (onnxruntime|openvino) \S+ \| [\d.]+ \|", text, re.M), text
    m = data["models"][0]
    assert set(m["build_s"]) == {"fp32", "fp16", "int8"} and m["stream"]["ratio"] > 0
    assert 0 <= m["agreement"]["onnxruntime int8-cpu"] <= 1
    for png in ("latency.png", "agreement_vs_speed.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({png})" in text
