"""TensorRT on a real GPU (marked gpu): build for this device, run, compare with ONNX Runtime.

Needs TensorRT (or TensorRT-RTX on an RTX GPU) and a CUDA binding; skipped elsewhere.
Agreement targets: top-1 >= 0.99 at INT8 and >= 0.999 at FP16 against ONNX Runtime FP32,
on a GoogLeNet trained on scikit-learn's digits inside the test.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests import digits
from tests.threads import run_threads

pytestmark = pytest.mark.gpu
TRAIN = 1300


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    pytest.importorskip("torch")
    from edgekit.trt.cuda import available
    from edgekit.trt.parse import load_trt

    try:
        load_trt()
    except Exception as exc:
        pytest.skip(str(exc))
    if not available():
        pytest.skip("no CUDA binding (pycuda or cuda-python)")
    from edgekit.quant.calibrate import CalibrateRequest, calibrate_bundle

    root = tmp_path_factory.mktemp("gpu")
    b, x, y = digits.trained_bundle(root, TRAIN, out="b")
    digits.write_folder(root / "calib", x[:TRAIN:4], y[:TRAIN:4], by_class=False)
    calibrate_bundle(CalibrateRequest(b, root / "calib", method="entropy"))
    return b, x[TRAIN:]


@pytest.mark.parametrize("precision, target", [("fp16", 0.999), ("int8", 0.99), ("fp32", 0.999)])
def test_engine_agrees_with_onnxruntime(bundle, precision, target):
    from edgekit.runtime.loader import load
    from edgekit.trt.engine import EngineRequest, build

    b, frames = bundle
    res = build(EngineRequest(b, precision=precision))
    step = int(res.entry["batch"]["max"])  # batches within the engine's optimisation profile
    with load(b, backend="tensorrt", precision=precision) as trt, \
            load(b, backend="onnxruntime", precision="fp32") as ref:
        assert trt.backend == "tensorrt"
        got = np.array([p.indices[0] for i in range(0, len(frames), step)
                        for p in trt.classify_batch(list(frames[i:i + step]))])
        want = np.array([p.indices[0] for p in ref.classify_batch(list(frames))])
    agreement = float((got == want).mean())
    print(f"{precision}: top-1 agreement {agreement:.4f} on {len(frames)} images")
    assert agreement >= target


def test_four_threads_give_the_same_answers(bundle):
    from edgekit.runtime.loader import load
    from edgekit.trt.engine import EngineRequest, build

    b, frames = bundle
    build(EngineRequest(b, precision="fp16"))
    frames = list(frames[:64])
    with load(b, backend="tensorrt", precision="fp16") as clf:
        one = [clf.classify(f).indices for f in frames]
        out = run_threads(lambda i: [clf.classify(f).indices for f in frames])
    assert all(out[i] == one for i in range(4))


def test_engine_from_another_version_is_refused_before_deserialising(bundle, tmp_path):
    import json

    from edgekit import manifest as mf
    from edgekit.runtime.loader import load
    from edgekit.trt.engine import EngineRequest, build
    from edgekit.trt.runner import EngineMismatch

    b, _ = bundle
    c = tmp_path / "c"
    shutil.copytree(b, c)
    build(EngineRequest(c, precision="fp16"))
    data = json.loads((c / mf.MANIFEST).read_text())
    for e in data["engines"]:
        e["trt_version"] = "0.1.0"
    (c / mf.MANIFEST).write_text(json.dumps(data))
    with pytest.raises(EngineMismatch, match="edgekit build"):
        load(c, backend="tensorrt", precision="fp16")
    with load(c, precision="fp16") as clf:
        assert clf.backend == "onnxruntime" and "0.1.0" in clf.why
