"""Real consumers of our ONNX: OpenCV's own importer and TensorRT's parser (TensorRT-RTX on the CPU)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from edgekit.export.torch_onnx import onnx_input, parity_inputs  # noqa: E402
from edgekit.manifest import read  # noqa: E402
from edgekit.runners.ort import OrtRunner  # noqa: E402

ALL = ["googlenet", "bn_inception", "inception_v3", "inception_v4", "inception_resnet_v1", "inception_resnet_v2"]


@pytest.mark.parametrize("model", ["googlenet", "inception_v3"])
def test_opencv_dnn_loads_float_input_export_and_agrees(export_bundle, model):
    cv2 = pytest.importorskip("cv2")
    path = export_bundle(model, float_input=True, batch=1)
    man = read(path)
    net = cv2.dnn.readNetFromONNX(str(path / "model.onnx"))
    images = parity_inputs(man.preprocess, 2)
    x = onnx_input(images, man.preprocess, float_input=True)
    with OrtRunner(path / "model.onnx") as ort:
        for i in range(len(x)):
            ref = ort.infer(x[i:i + 1])
            net.setInput(x[i:i + 1])
            got = net.forward()
            span = float(ref.max() - ref.min())
            assert np.abs(got - ref).max() <= 1e-3 * span
            assert got.argmax() == ref.argmax()


@pytest.mark.parametrize("model", ALL)
def test_tensorrt_rtx_parses_every_export(export_bundle, model):
    pytest.importorskip("tensorrt_rtx")
    from edgekit.trt.parse import parse

    report = parse(export_bundle(model) / "model.onnx", prefer="tensorrt_rtx")
    assert report.ok, [str(i) for i in report.issues]
    assert report.layers > 100
    name, dtype, shape = report.inputs[0]
    assert name == "image" and "UINT8" in dtype and shape[0] == -1


def test_tensorrt_rtx_reports_what_it_refuses(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    import onnx
    from onnx import TensorProto, helper

    from edgekit.trt.parse import parse

    node = helper.make_node("NoSuchOp", ["x"], ["y"], name="mystery", domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(m, str(tmp_path / "bad.onnx"))
    report = parse(tmp_path / "bad.onnx", prefer="tensorrt_rtx")
    assert not report.ok
    assert any("mystery" in str(i) or "NoSuchOp" in str(i) for i in report.issues), report.issues
