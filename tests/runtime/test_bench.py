"""edgekit bench: real ONNX Runtime and PyTorch timings on a real (random-weight) GoogLeNet bundle."""

from __future__ import annotations

import json

import pytest

from edgekit.errors import UsageError
from edgekit.export import torch_peer
from edgekit.runtime import bench, timing
from tests.cli.test_cli import run as run_cli

FAST = timing.Settings(warmup=1, min_runs=3, min_seconds=0.0)


def test_measure_honours_runs_and_seconds():
    calls = []
    times = timing.measure(lambda: calls.append(1), timing.Settings(warmup=2, min_runs=5, min_seconds=0.0))
    assert len(times) == 5 and len(calls) == 7
    import time

    t0 = time.perf_counter()
    times = timing.measure(lambda: time.sleep(0.001), timing.Settings(warmup=0, min_runs=1, min_seconds=0.05))
    assert time.perf_counter() - t0 >= 0.05 and len(times) >= 10  # kept going for the time, not one run


def test_rows_for_each_precision_and_batch_with_torch(googlenet_bundle):
    pytest.importorskip("torch")
    rows, notes = bench.bench_bundle(googlenet_bundle, batches=(1, 2), peer=torch_peer.peer(), settings=FAST)
    got = {(r.backend, r.precision, r.batch) for r in rows if r.backend in ("torch", "onnxruntime")}
    assert got == {("torch", "fp32", 1), ("torch", "fp32", 2), ("onnxruntime", "fp32", 1), ("onnxruntime", "fp32", 2)}
    # the path the default backend chooses here, at each batch (FP32 only: this bundle is not calibrated)
    assert sorted((r.backend.split(":")[0], r.precision, r.batch) for r in rows if r.backend.startswith("auto:")) == [
        ("auto", "fp32", 1), ("auto", "fp32", 2)]
    assert any(n.startswith("auto (") and "x ONNX Runtime fp32" in n for n in notes)
    for r in rows:
        assert r.runs >= 3 and 0 < r.p50_ms <= r.p90_ms <= r.p99_ms
        assert r.throughput == pytest.approx(r.batch * 1000 / r.mean_ms)
        assert r.host_peak_mib and r.host_peak_mib > 50
    torch_row = next(r for r in rows if r.backend == "torch")
    assert "logits match ONNX Runtime" in torch_row.note
    assert "x torch fp32" in next(r for r in rows if r.backend == "onnxruntime").note
    assert any("no NVIDIA GPU" in n for n in notes)
    text = bench.table(rows)
    assert "p99 ms" in text and "1.00x" in text


def test_torch_with_other_weights_is_refused(googlenet_bundle, tmp_path):
    torch = pytest.importorskip("torch")
    from edgekit.zoo import get_spec

    torch.manual_seed(123)
    other = get_spec("googlenet").builder(1000, 224)
    torch.save(other.state_dict(), tmp_path / "other.pth")
    with pytest.raises(UsageError, match="does not reproduce"):
        bench.bench_bundle(googlenet_bundle, peer=torch_peer.peer(str(tmp_path / "other.pth")), settings=FAST)


def test_cli_json_and_errors(googlenet_bundle):
    res = run_cli(["bench", str(googlenet_bundle), "--batch", "1", "--runs", "2", "--seconds", "0", "--warmup", "0",
                   "--json"])
    data = json.loads(res.stdout)
    assert data["rows"][0]["backend"] == "onnxruntime" and data["rows"][0]["batch"] == 1
    assert data["machine"]["cores"] >= 1
    err = run_cli(["bench", str(googlenet_bundle), "--batch", "1,x"], expect=2).stderr
    assert "--batch takes sizes separated by commas" in err
    err = run_cli(["bench", str(googlenet_bundle), "--precision", "int8", "--runs", "1", "--seconds", "0"],
                  expect=2).stderr
    assert "has no int8 model; it has: fp32" in err
    err = run_cli(["bench", str(googlenet_bundle), "--backend", "tensorrt"], expect=2).stderr
    assert "no TensorRT measurement possible: no NVIDIA GPU here" in err
