"""Every zoo model exports and passes parity; bundles are atomic and complete."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from edgekit import manifest as mf  # noqa: E402
from edgekit.errors import ExportError, UsageError  # noqa: E402
from edgekit.export import parity  # noqa: E402
from edgekit.export.torch_onnx import ExportRequest, export  # noqa: E402

SMALL = ["googlenet", "bn_inception", "inception_v3", "inception_resnet_v1"]
LARGE = ["inception_v4", "inception_resnet_v2"]


def _check_bundle(path: Path, model: str) -> mf.Manifest:
    man = mf.read(path)
    assert man.model.name == model
    par = man.validation["parity"]
    assert par["passed"] and par["max_rel_error"] <= 1e-4
    assert par["top1_equal"] == par["inputs"] >= 10 and par["photographs"] >= 2
    onnx_art = man.artifact("onnx", "fp32")
    assert onnx_art is not None and (path / onnx_art.path).stat().st_size == onnx_art.bytes
    assert man.input.dtype == "uint8" and man.input.layout == "NHWC" and man.input.shape[0] == "batch"
    return man


@pytest.mark.parametrize("model", SMALL)
def test_export_and_parity(export_bundle, model):
    man = _check_bundle(export_bundle(model), model)
    assert man.model.opset == 17


@pytest.mark.slow
@pytest.mark.parametrize("model", LARGE)
def test_export_and_parity_large(export_bundle, model):
    _check_bundle(export_bundle(model), model)


def test_onnx_graph_is_checked_and_preprocessing_is_in_it(googlenet_bundle):
    import onnx

    proto = onnx.load(str(googlenet_bundle / "model.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    inp = proto.graph.input[0]
    assert inp.name == "image"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [224, 224, 3]
    # Cast is the first consumer of the uint8 input (TensorRT accepts uint8 only into a Cast)
    consumers = [n.op_type for n in proto.graph.node if "image" in n.input]
    assert consumers == ["Cast"]
    assert {n.op_type for n in proto.graph.node} >= {"Transpose", "Gather", "Mul", "Add"}


def test_dynamic_batch_runs_at_several_sizes(googlenet_bundle):
    from edgekit.runners.ort import OrtRunner

    with OrtRunner(googlenet_bundle / "model.onnx") as r:
        for n in (1, 3, 8):
            assert r.infer(np.zeros((n, 224, 224, 3), np.uint8)).shape == (n, 1000)


def test_static_batch(tmp_path):
    res = export(ExportRequest("googlenet", tmp_path / "b2", weights="random", batch=2, parity_random=2))
    assert res.manifest.input.shape == (2, 224, 224, 3)
    import onnx

    proto = onnx.load(str(res.bundle / "model.onnx"))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    # the runtime takes any number of frames: padded to the model's 2, or in twos
    from edgekit.runtime.loader import load

    frames = [np.full((120, 160, 3), v, np.uint8) for v in (10, 200, 90)]
    backends = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    for backend in backends:
        with load(res.bundle, backend=backend, precision="fp32") as clf:
            one = clf.classify(frames[0])
            three = clf.classify_batch(frames)
            assert len(three) == 3 and three[0].indices == one.indices
            assert [p.indices for p in clf.classify_batch(frames[:2])] == [p.indices for p in three[:2]]


def test_float_input_and_input_size(tmp_path):
    res = export(ExportRequest("inception_v3", tmp_path / "f", weights="random", float_input=True,
                               input_size=160, parity_random=2))
    man = res.manifest
    assert man.input.dtype == "float32" and man.input.layout == "NCHW"
    assert man.input.shape == ("batch", 3, 160, 160) and man.input.color_order == "RGB"
    assert man.validation["parity"]["passed"]


def test_existing_bundle_needs_force(googlenet_bundle):
    with pytest.raises(UsageError, match="already exists; pass --force"):
        export(ExportRequest("googlenet", googlenet_bundle, weights="random"))


def test_force_replaces_atomically(tmp_path):
    out = tmp_path / "g"
    export(ExportRequest("googlenet", out, weights="random", parity_random=1))
    first = (out / "manifest.json").read_text()
    export(ExportRequest("googlenet", out, weights="random", parity_random=2, force=True))
    assert (out / "manifest.json").read_text() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]  # no staging left behind


def test_parity_failure_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(parity, "PARITY_TOLERANCE", 0.0)
    out = tmp_path / "never"
    with pytest.raises(ExportError, match="does not match PyTorch.*no bundle written"):
        export(ExportRequest("googlenet", out, weights="random", parity_random=1))
    assert list(tmp_path.iterdir()) == []


def test_parity_failure_keeps_the_old_bundle(tmp_path, monkeypatch):
    out = tmp_path / "keep"
    export(ExportRequest("googlenet", out, weights="random", parity_random=1))
    before = (out / "manifest.json").read_text()
    monkeypatch.setattr(parity, "PARITY_TOLERANCE", 0.0)
    with pytest.raises(ExportError):
        export(ExportRequest("googlenet", out, weights="random", parity_random=1, force=True))
    assert (out / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


@pytest.mark.parametrize("model,size,match", [
    ("inception_v3", 64, "use --input-size 75 or more"),
    ("bn_inception", 200, "multiple of 32, e.g. 192 or 224"),
])
def test_input_size_refused_with_reason(tmp_path, model, size, match):
    with pytest.raises(UsageError, match=match):
        export(ExportRequest(model, tmp_path / "x", weights="random", input_size=size))
    assert not (tmp_path / "x").exists()


def test_no_imagenet_weights_for_irv1(tmp_path):
    with pytest.raises(UsageError, match="no published ImageNet weights.*--weights PATH"):
        export(ExportRequest("inception_resnet_v1", tmp_path / "x"))


def test_custom_labels_and_classes_from_checkpoint(tmp_path):
    import torch

    from edgekit.zoo import get_spec

    model = get_spec("googlenet").builder(3, 224)
    torch.save(model.state_dict(), tmp_path / "parts.pth")
    (tmp_path / "labels.txt").write_text("bolt\nnut\nwasher\n")
    res = export(ExportRequest("googlenet", tmp_path / "parts", weights=str(tmp_path / "parts.pth"),
                               labels=tmp_path / "labels.txt", parity_random=2))
    man = res.manifest
    assert man.model.num_classes == 3 and man.output.shape == ("batch", 3)
    assert (res.bundle / "labels.txt").read_text().split() == ["bolt", "nut", "washer"]
    assert man.model.weights_sha256 and man.model.weights.endswith("parts.pth")
    (tmp_path / "bad.txt").write_text("a\nb\n")
    with pytest.raises(UsageError, match="has 2 names but the model has 3 classes"):
        export(ExportRequest("googlenet", tmp_path / "p2", weights=str(tmp_path / "parts.pth"),
                             labels=tmp_path / "bad.txt"))


def test_manifest_is_valid_json_with_schema(googlenet_bundle):
    data = json.loads((googlenet_bundle / "manifest.json").read_text())
    assert data["schema"] == "edgekit.bundle" and data["schema_version"] == 1
    assert data["preprocess"]["mean"] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("model,include", [("bn_inception", 1), ("inception_v3", 1), ("inception_v4", 0)])
def test_count_include_pad_survives_export(export_bundle, model, include):
    """Padded average pools keep their divisor rule: inception_v4 excludes the padding
    (timm: count_include_pad=False), v3 and BN-Inception include it (neo-ai/tvm #32)."""
    import onnx

    proto = onnx.load(str(export_bundle(model) / "model.onnx"))
    seen = set()
    for n in proto.graph.node:
        if n.op_type == "AveragePool":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            if any(attrs.get("pads", [0])):
                seen.add(attrs.get("count_include_pad", 0))
    assert seen == {include}
