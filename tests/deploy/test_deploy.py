"""DeepStream and Triton exports, checked against the real artefacts we can run here.

DeepStream: the nvinfer config is read back as DeepStream reads it (GKeyFile groups, known
keys and values), nvinfer's own preprocessing formula is applied to a real photograph and
fed to the rewritten ONNX with ONNX Runtime, which must give the bundle's own logits; the
rewritten ONNX parses with TensorRT's parser (TensorRT-RTX). Triton: config.pbtxt is parsed
with Triton's ModelConfig protobuf schema from tritonclient, and the model it describes is run
with exactly the dtypes and dims it declares. No DeepStream or Triton server runs here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekit import manifest as mf
from edgekit.deploy.deepstream import DeepStreamRequest, export_deepstream
from edgekit.deploy.nvinfer import parse_ini, validate_app, validate_nvinfer
from edgekit.deploy.triton import TritonRequest, export_triton
from edgekit.errors import UsageError
from edgekit.images import read_image, sample_images
from edgekit.preprocess import fit_frame
from edgekit.runners.ort import OrtRunner
from edgekit.runtime import classifier, loader
from tests.cli.test_cli import run as run_cli


def prop(out: Path) -> dict[str, str]:
    return dict(parse_ini((out / "config_infer_primary.txt").read_text()))["property"]


def nvinfer_input(frame_bgr: np.ndarray, bundle: Path, p: dict[str, str]) -> np.ndarray:
    """What nvinfer feeds the network: scaled frame, y = net-scale-factor * (x - offsets[c]), planar."""
    man = mf.read(bundle)
    img = fit_frame(frame_bgr, man.preprocess).astype(np.float32)  # BGR, H x W x 3
    if p["model-color-format"] == "0":
        img = img[..., ::-1]
    offsets = np.array([float(o) for o in p["offsets"].split(";")], np.float32)
    y = float(p["net-scale-factor"]) * (img - offsets)
    return np.ascontiguousarray(y.transpose(2, 0, 1))[None]


def bundle_probs(bundle: Path, frame: np.ndarray, precision: str = "fp32") -> np.ndarray:
    """The bundle's own answer for a frame, as probabilities (what the DeepStream model outputs)."""
    with loader.load(bundle, backend="onnxruntime", precision=precision) as clf:
        return classifier.softmax(clf.runner.infer(clf.prepare(frame)[None]))


@pytest.mark.parametrize("norm", ["graph", "nvinfer"])
def test_deepstream_nvinfer_preprocessing_plus_graph_equals_the_bundle(export_bundle, tmp_path, norm):
    kw = ({"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)} if norm == "graph"
          else {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)})
    b = export_bundle("googlenet", **kw)
    res = export_deepstream(DeepStreamRequest(b, tmp_path / "ds", "fp32", "jetson-orin-nano", sources=3))
    assert res.normalisation == norm and res.network_mode == 0
    p = prop(tmp_path / "ds")
    validate_nvinfer((tmp_path / "ds" / "config_infer_primary.txt").read_text(), tmp_path / "ds")
    assert p["infer-dims"] == "3;224;224" and p["network-type"] == "1" and p["batch-size"] == "3"
    assert p["model-color-format"] == "0" and p["output-blob-names"] == "probabilities"
    if norm == "graph":  # per-channel std: nvinfer passes pixels through
        assert p["net-scale-factor"] == "1.0" and p["offsets"] == "0;0;0"
    else:  # one scale: nvinfer normalises, y = (x - 127.5) / 127.5
        assert float(p["net-scale-factor"]) == pytest.approx(1 / 127.5) and p["offsets"] == "127.5;127.5;127.5"
    import onnx

    m = onnx.load(str(tmp_path / "ds" / p["onnx-file"]))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    ops = [n.op_type for n in m.graph.node[:3]]
    assert "Cast" not in ops and "Transpose" not in ops and ("Mul" in ops) == (norm == "graph")
    runner = OrtRunner(tmp_path / "ds" / p["onnx-file"])
    for path in sample_images():
        frame = read_image(path)
        got = runner.infer(nvinfer_input(frame, b, p))
        want = bundle_probs(b, frame)
        assert np.abs(got - want).max() <= 1e-5 and got.argmax() == want.argmax()
    labels = (tmp_path / "ds" / "labels.txt").read_text()
    assert labels.count("\n") == 1 and len(labels.split(";")) == 1000
    app = (tmp_path / "ds" / "deepstream_app_config.txt").read_text()
    validate_app(app)
    groups = dict(parse_ini(app))
    assert {"source0", "source1", "source2"} <= set(groups) and "source3" not in groups
    assert groups["streammux"]["batch-size"] == "3"
    assert groups["primary-gie"]["config-file"] == "config_infer_primary.txt"


def test_deepstream_bgr_caffe_model_uses_nvinfer_offsets(export_bundle, tmp_path):
    b = export_bundle("bn_inception")
    res = export_deepstream(DeepStreamRequest(b, tmp_path / "ds", "fp16", "desktop-ada"))
    p = prop(tmp_path / "ds")
    assert res.normalisation == "nvinfer" and p["model-color-format"] == "1" and p["network-mode"] == "2"
    assert float(p["net-scale-factor"]) == pytest.approx(1.0)
    frame = read_image(sample_images()[0])
    got = OrtRunner(tmp_path / "ds" / p["onnx-file"]).infer(nvinfer_input(frame, b, p))
    want = bundle_probs(b, frame)
    assert np.abs(got - want).max() <= 1e-5


def test_deepstream_onnx_parses_with_tensorrt(export_bundle, tmp_path):
    pytest.importorskip("tensorrt_rtx")
    from edgekit.trt.parse import parse

    export_deepstream(DeepStreamRequest(export_bundle("googlenet"), tmp_path / "ds", "fp32", "desktop-ada"))
    rep = parse(tmp_path / "ds" / prop(tmp_path / "ds")["onnx-file"], prefer="tensorrt_rtx")
    assert rep.ok, rep.issues
    assert rep.inputs[0][0] == "input" and rep.inputs[0][2][1:] == (3, 224, 224)


@pytest.fixture(scope="module")
def int8_bundle(googlenet_bundle, tmp_path_factory):
    from edgekit.quant.calibrate import CalibrateRequest, calibrate_bundle

    b = tmp_path_factory.mktemp("q") / "b"
    shutil.copytree(googlenet_bundle, b)
    calibrate_bundle(CalibrateRequest(b, None, min_agreement=0.0))
    return b


def test_deepstream_int8_explicit_and_dla_implicit(int8_bundle, tmp_path):
    res = export_deepstream(DeepStreamRequest(int8_bundle, tmp_path / "q", "int8", "jetson-orin-nano"))
    p = prop(tmp_path / "q")
    # nvinfer turns on TensorRT's INT8 only with a calibration file; the Q/DQ scales in the graph rule
    assert res.network_mode == 1 and p["int8-calib-file"] == "calibration.cache" and "enable-dla" not in p
    import onnx

    m = onnx.load(str(tmp_path / "q" / p["onnx-file"]))
    assert any(n.op_type == "QuantizeLinear" for n in m.graph.node)  # explicit quantization: scales in the graph
    frame = read_image(sample_images()[1])
    got = OrtRunner(tmp_path / "q" / p["onnx-file"]).infer(nvinfer_input(frame, int8_bundle, p))
    want = bundle_probs(int8_bundle, frame, "int8")
    assert np.abs(got - want).max() <= 1e-4

    # TensorRT 8.x (DeepStream 6.x on JetPack 5/6.0) parses no int8 weight initializer: float weights
    # behind a QuantizeLinear, unless the target is known to be TensorRT 10 or later
    init = {i.name: i.data_type for i in m.graph.initializer}
    dq_inputs = [n.input[0] for n in m.graph.node if n.op_type == "DequantizeLinear"]
    assert not any(init.get(x) == onnx.TensorProto.INT8 for x in dq_inputs)
    export_deepstream(DeepStreamRequest(int8_bundle, tmp_path / "q10", "int8", "jetson-orin-nano",
                                        trt_version="10.3.0"))
    m10 = onnx.load(str(tmp_path / "q10" / prop(tmp_path / "q10")["onnx-file"]))
    assert any({i.name: i.data_type for i in m10.graph.initializer}.get(n.input[0]) == onnx.TensorProto.INT8
               for n in m10.graph.node if n.op_type == "DequantizeLinear")

    with pytest.raises(UsageError, match="give --trt-version"):  # the DLA's cache must name the target's TensorRT
        export_deepstream(DeepStreamRequest(int8_bundle, tmp_path / "dla", "int8", "jetson-agx-orin", dla=1))
    export_deepstream(DeepStreamRequest(int8_bundle, tmp_path / "dla", "int8", "jetson-agx-orin", dla=1,
                                        trt_version="8.5.2"))
    p = prop(tmp_path / "dla")
    assert p["enable-dla"] == "1" and p["use-dla-core"] == "1" and p["int8-calib-file"] == "calibration.cache"
    from edgekit.quant import calibcache

    cache = calibcache.loads((tmp_path / "dla" / "calibration.cache").read_text())
    old = calibcache.loads((int8_bundle / "calibration.cache").read_text())
    # nvinfer normalises (one scale for all channels): the network input is in [-1, 1], not 0..255
    assert p["offsets"] == "127.5;127.5;127.5" and float(p["net-scale-factor"]) == pytest.approx(1 / 127.5)
    assert cache.amax("input") == pytest.approx(1.0, rel=1e-5) and set(old.scales) <= set(cache.scales)
    m = onnx.load(str(tmp_path / "dla" / p["onnx-file"]))
    assert not any(n.op_type == "QuantizeLinear" for n in m.graph.node)  # implicit: FP32 graph + cache
    # DLA takes no dynamic shapes: the batch is fixed at nvinfer's batch-size (else a 1..N profile
    # and every layer falls back to the GPU)
    assert p["batch-size"] == "4"
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim][0] == 4
    assert m.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 4
    with pytest.raises(UsageError, match="beyond the profile's largest"):
        export_deepstream(DeepStreamRequest(int8_bundle, tmp_path / "dla256", "int8", "jetson-agx-orin", dla=1,
                                            trt_version="8.5.2", batch=256))


def test_deepstream_refusals_and_atomic_output(googlenet_bundle, int8_bundle, tmp_path):
    with pytest.raises(UsageError, match="no DLA"):
        export_deepstream(DeepStreamRequest(int8_bundle, tmp_path / "x", "int8", "jetson-orin-nano", dla=0))
    with pytest.raises(UsageError, match="use --fp16"):
        export_deepstream(DeepStreamRequest(int8_bundle, tmp_path / "x", "int8", "jetson-nano"))
    with pytest.raises(UsageError, match="edgekit calibrate"):
        export_deepstream(DeepStreamRequest(googlenet_bundle, tmp_path / "x", "int8", "jetson-orin-nano"))
    assert not (tmp_path / "x").exists()
    (tmp_path / "y").mkdir()
    err = run_cli(["export-deepstream", str(googlenet_bundle), "-o", str(tmp_path / "y"), "--profile",
                   "desktop-ada"], expect=2).stderr
    assert "already exists; pass --force" in err and not any((tmp_path / "y").iterdir())
    out = run_cli(["export-deepstream", str(googlenet_bundle), "-o", str(tmp_path / "y"), "--profile",
                   "desktop-ada", "--force", "--sources", "2"]).stdout
    assert "deepstream-app -c" in out and (tmp_path / "y" / "README.txt").is_file()


@pytest.mark.parametrize("precision, dla, mode, name, built_as", [
    ("fp32", None, 0, "googlenet.float.onnx", "FP32"),
    ("fp16", None, 2, "googlenet.float.onnx", "FP16"),
    ("int8", None, 1, "googlenet.int8-qdq.onnx", "INT8"),
    ("int8", 0, 1, "googlenet.float.onnx", "INT8"),  # DLA: implicit INT8 from the float graph and the cache
])
def test_deepstream_file_name_and_network_mode_agree(int8_bundle, tmp_path, precision, dla, mode, name, built_as):
    """The ONNX file is named by what it is (the float graph, or the Q/DQ INT8 one), never by a precision the
    engine will not have; a one-line note says what nvinfer builds from it (issue 17: a '...fp32.float.onnx'
    with network-mode 2)."""
    profile = "jetson-agx-orin" if dla is not None else "jetson-orin-nano"
    res = export_deepstream(DeepStreamRequest(int8_bundle, tmp_path / "ds", precision, profile, dla=dla,
                                              trt_version="8.6.2"))
    p = prop(tmp_path / "ds")
    assert res.network_mode == mode and p["network-mode"] == str(mode) and p["onnx-file"] == name
    assert (tmp_path / "ds" / name).is_file() and name in res.files
    claimed = {w for w in ("fp32", "fp16", "int8") if w in name}
    assert claimed <= {precision}, f"{name} claims {claimed} for a {precision} engine"
    assert "\n" not in res.note and res.note.startswith(f"{name} is the ")
    assert f"nvinfer builds it as {built_as} (network-mode {mode})" in res.note
    assert ("Q/DQ INT8 graph" in res.note) == (name.endswith("int8-qdq.onnx"))
    assert ("FP32 graph" in res.note) == (name.endswith("float.onnx"))
    if dla is not None:
        assert res.note.endswith(f"on DLA core {dla}") and "calibration.cache" in res.note
    # the engine nvinfer writes beside it says the same: <onnx-file>_b<batch>_<gpu0|dlaN>_<precision>.engine
    assert p["model-engine-file"].startswith(name + "_b") and p["model-engine-file"].endswith(f"_{precision}.engine")
    # and the files a person opens say it too
    assert res.note in (tmp_path / "ds" / "README.txt").read_text()
    assert f"# {res.note}." in (tmp_path / "ds" / "config_infer_primary.txt").read_text()


def test_deepstream_validation_catches_mistakes(tmp_path):
    good = "[property]\nnet-scale-factor=1\ninfer-dims=3;224;224\nnetwork-mode=2\n"
    validate_nvinfer(good, tmp_path)
    for bad, words in ((good + "network-mod=2\n", "does not know: network-mod"),
                       (good.replace("network-mode=2", "network-mode=7"), "network-mode=7"),
                       (good + "onnx-file=missing.onnx\n", "does not exist"),
                       (good + "network-mode=1\n", "twice")):
        with pytest.raises(UsageError, match=words):
            validate_nvinfer(bad, tmp_path)
    with pytest.raises(UsageError, match="no \\[sources0\\] group"):
        validate_app("[sources0]\nenable=1\n")


# ------------------------------------------------------------------ Triton


def triton_config(path: Path):
    pytest.importorskip("tritonclient.grpc")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_triton_config_parses_with_tritons_schema_and_describes_the_model(googlenet_bundle, tmp_path):
    models = export_triton(TritonRequest(googlenet_bundle, tmp_path / "repo", max_batch=8, instances=2))
    assert [m.platform for m in models] == ["onnxruntime_onnx"]
    d = models[0].path
    assert (d / "1" / "model.onnx").is_file() and (d / "labels.txt").is_file()
    cfg = triton_config(d / "config.pbtxt")
    from tritonclient.grpc import model_config_pb2 as pb

    assert cfg.name == d.name == "googlenet_onnx_fp32" and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 8 and list(cfg.dynamic_batching.preferred_batch_size) == [1, 2, 4, 8]
    assert cfg.instance_group[0].count == 2 and cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    (inp,), (out,) = cfg.input, cfg.output
    assert inp.data_type == pb.TYPE_UINT8 and inp.format == pb.ModelInput.FORMAT_NHWC
    assert list(inp.dims) == [224, 224, 3]
    assert out.data_type == pb.TYPE_FP32 and list(out.dims) == [1000] and out.label_filename == "labels.txt"
    # run the model exactly as Triton would: declared name, dtype and dims, batch in front
    dtype = {pb.TYPE_UINT8: np.uint8, pb.TYPE_FP32: np.float32}[inp.data_type]
    with loader.load(googlenet_bundle, backend="onnxruntime", precision="fp32") as clf:
        frames = [read_image(p) for p in sample_images()]
        x = np.stack([clf.prepare(f) for f in frames]).astype(dtype)
        assert x.shape[1:] == tuple(inp.dims)
        import onnxruntime as ort

        sess = ort.InferenceSession(str(d / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        y = sess.run([out.name], {inp.name: x})[0]
        assert y.shape == (len(frames), *out.dims)
        labels = (d / "labels.txt").read_text().splitlines()
        assert [labels[i] for i in y.argmax(1)] == [clf.classify(f).label for f in frames]


def test_triton_schema_check_can_fail(googlenet_bundle, tmp_path):
    (m,) = export_triton(TritonRequest(googlenet_bundle, tmp_path / "repo"))
    cfg = m.path / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("max_batch_size", "max_batch"))
    from google.protobuf.text_format import ParseError

    with pytest.raises(ParseError):
        triton_config(cfg)


def test_triton_cpu_int8_and_refusals(int8_bundle, tmp_path):
    (m,) = export_triton(TritonRequest(int8_bundle, tmp_path / "repo", precision="int8-cpu", instances=3))
    cfg = triton_config(m.path / "config.pbtxt")
    from tritonclient.grpc import model_config_pb2 as pb

    assert cfg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU and cfg.instance_group[0].count == 3
    with pytest.raises(UsageError, match="already exists"):
        export_triton(TritonRequest(int8_bundle, tmp_path / "repo", precision="int8-cpu"))
    with pytest.raises(UsageError, match="has no fp16x model"):
        export_triton(TritonRequest(int8_bundle, tmp_path / "r2", precision="fp16x"))
    with pytest.raises(UsageError, match="at least 1"):
        export_triton(TritonRequest(int8_bundle, tmp_path / "r3", instances=0))
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


def test_triton_cli_and_client_example(googlenet_bundle, tmp_path):
    res = run_cli(["export-triton", str(googlenet_bundle), "-o", str(tmp_path / "repo"), "--max-batch", "4",
                   "--instances", "2"])
    assert "googlenet_onnx_fp32\tonnxruntime_onnx" in res.stdout
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("triton_client", Path(__file__).parents[2] / "examples" /
                                                  "triton_client.py")
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    pre = json.loads((tmp_path / "repo" / "googlenet_onnx_fp32" / "preprocess.json").read_text())
    man = mf.read(googlenet_bundle)
    for p in sample_images():
        mine = client.prepare(str(p), 224, 224, pre["crop_fraction"], pre["interpolation"])
        assert np.array_equal(mine, fit_frame(read_image(p), man.preprocess))
    pytest.importorskip("tritonclient.http")
    batch = np.zeros((2, 224, 224, 3), np.uint8)
    (inp,), (out,) = client.request(batch, "image", "logits", 3)
    assert inp.shape() == [2, 224, 224, 3] and inp.datatype() == "UINT8"
    assert client.parse(np.array([[b"0.9:3:tiger shark", b"0.05:4:hammerhead"]])) == [
        [(0.9, 3, "tiger shark"), (0.05, 4, "hammerhead")]]


def test_dla_cache_with_per_channel_normalisation_and_the_target_tensorrt(export_bundle, tmp_path):
    """Per-channel std stays in the graph, so the network input is pixels 0..255 (amax 255). The
    cache header names the target DeepStream's TensorRT, or TensorRT ignores the cache."""
    from edgekit.quant import calibcache
    from edgekit.quant.calibrate import CalibrateRequest, calibrate_bundle

    b = tmp_path / "u"
    shutil.copytree(export_bundle("googlenet", input_size=64, mean=(0.485, 0.456, 0.406),
                                  std=(0.229, 0.224, 0.225)), b)
    calibrate_bundle(CalibrateRequest(b, None, num_images=16, min_agreement=0.0, fp16=False))
    res = export_deepstream(DeepStreamRequest(b, tmp_path / "ds", "int8", "jetson-agx-orin", dla=0,
                                              trt_version="10.3.0"))
    assert res.normalisation == "graph"
    cache = calibcache.loads((tmp_path / "ds" / "calibration.cache").read_text())
    assert cache.amax("input") == pytest.approx(255.0, rel=1e-5)
    assert cache.version == calibcache.trt_version_number("10.3.0")
    export_deepstream(DeepStreamRequest(b, tmp_path / "ds85", "int8", "jetson-agx-orin", dla=0, trt_version="8.5.2"))
    assert calibcache.loads((tmp_path / "ds85" / "calibration.cache").read_text()).version == 8502
