"""edgekit import: classifiers exported elsewhere (a user's torch.onnx.export, Keras through tf2onnx)
become bundles that calibrate, parse with TensorRT and classify as exported ones do; what cannot be
imported is refused in one line, and nothing is left half-written."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import click  # noqa: E402
import onnx  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgekit import manifest as mf  # noqa: E402
from edgekit.errors import ExportError, UsageError  # noqa: E402
from edgekit.export import importer  # noqa: E402
from edgekit.export.importer import PRESETS, ImportRequest, import_model  # noqa: E402
from edgekit.export.parity import softmax  # noqa: E402
from edgekit.images import read_image, sample_images  # noqa: E402
from edgekit.preprocess import Preprocess, fit_frame  # noqa: E402
from edgekit.runners.ort import OrtRunner  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
KERAS_SCRIPT = Path(__file__).resolve().parents[1] / "foreign" / "make_keras_inception.py"


# ---------------------------------------------------------------- tiny foreign graphs


def tiny(path: Path, layout: str = "NCHW", batch: int | str = "n", hw: tuple[int | str, int | str] = (32, 32),
         softmax_out: bool = False, classes: int = 5, opset: int = 17, channels: int = 3,
         in_type: int = TensorProto.FLOAT, extra_input: bool = False, extra_output: bool = False,
         out_4d: bool = False, rank: int = 4) -> Path:
    """A small conv classifier written with onnx.helper, as another tool would hand it over."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (8, channels, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b"),
             numpy_helper.from_array(rng.normal(0, 0.5, (classes, 8)).astype(np.float32), "fc"),
             numpy_helper.from_array(rng.normal(0, 0.1, classes).astype(np.float32), "fcb")]
    nodes = []
    x = "x"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
        x = "x_nchw"
    nodes += [helper.make_node("Conv", [x, "w", "b"], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c"], ["r"]),
              helper.make_node("GlobalAveragePool", ["r"], ["p"])]
    if out_4d:
        inits.append(numpy_helper.from_array(rng.normal(0, 0.5, (classes, 8, 1, 1)).astype(np.float32), "w2"))
        nodes.append(helper.make_node("Conv", ["p", "w2"], ["y"]))
        out_shape: list[int | str] = [batch, classes, 1, 1]
    else:
        nodes += [helper.make_node("Flatten", ["p"], ["f"]),
                  helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits_pre" if softmax_out else "y"], transB=1)]
        if softmax_out:
            nodes.append(helper.make_node("Softmax", ["logits_pre"], ["y"], axis=-1))
        out_shape = [batch, classes]
    h, w = hw
    dims: list[int | str] = [batch, channels, h, w] if layout == "NCHW" else [batch, h, w, channels]
    inputs = [helper.make_tensor_value_info("x", in_type, dims[:rank])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)]
    if extra_input:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [batch, 1]))
        nodes.append(helper.make_node("Identity", ["mask"], ["mask_out"]))
        outputs.append(helper.make_tensor_value_info("mask_out", TensorProto.FLOAT, [batch, 1]))
    elif extra_output:
        outputs.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, [batch, 8, 1, 1]))
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tinytool",
                              producer_version="0.1")
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def flags(**kw) -> dict:
    base = {"layout": "nchw", "color": "rgb", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    return {**base, **kw}


def test_tiny_nchw_fixed_batch_bundle_and_front_end(tmp_path):
    src = tiny(tmp_path / "tiny.onnx", batch=2)
    lines: list[str] = []
    res = import_model(ImportRequest(src, tmp_path / "b", **flags()), log=lines.append)
    man = mf.read(res.bundle)
    assert man == res.manifest and not res.softmax_removed
    assert man.input == mf.TensorSpec("image", "uint8", "NHWC", (2, 32, 32, 3), "BGR")
    assert man.output == mf.TensorSpec("logits", "float32", "NC", (2, 5))
    assert man.preprocess == Preprocess(32, 32, 0.875, "bilinear", (0.5,) * 3, (0.25,) * 3, "RGB", 1.0)
    assert man.model.name == "tiny" and man.model.opset == 17 and man.model.num_classes == 5
    assert man.model.weights_sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    rec = man.validation["import"]
    assert rec["file"] == "tiny.onnx" and rec["sha256"] == man.model.weights_sha256
    assert rec["producer_name"] == "tinytool" and rec["producer_version"] == "0.1" and rec["batch"] == 2
    assert rec["preset"] is None and rec["flags"]["layout"] == "nchw" and rec["input"]["layout"] == "NCHW"
    par = man.validation["parity"]
    assert par["passed"] and par["top1_equal"] == par["inputs"] == 12 and par["compared"] == "logits"
    assert (res.bundle / "labels.txt").read_text().split() == [f"class_{i}" for i in range(5)]
    assert any("batch fixed at 2" in line for line in lines)
    proto = onnx.load(str(res.bundle / "model.onnx"))
    assert [i.name for i in proto.graph.input] == ["image"] and [o.name for o in proto.graph.output] == ["logits"]
    # Cast first (TensorRT takes uint8 only into a Cast), then NCHW, RGB, x*scale+offset (export's order)
    assert [n.op_type for n in proto.graph.node[:6]] == ["Cast", "Transpose", "Gather", "Mul", "Add", "Conv"]
    assert [n.op_type for n in proto.graph.node if "image" in n.input] == ["Cast"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 32, 32, 3]
    # the front end computes exactly the numpy reference
    frames = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    with OrtRunner(res.bundle / "model.onnx") as r, OrtRunner(src) as o:
        ref = o.infer(importer.reference_input(frames, man.preprocess, "NCHW"))
        np.testing.assert_allclose(r.infer(frames), ref, rtol=1e-5, atol=1e-5)


def test_tiny_nhwc_softmax_removed_dynamic_batch(tmp_path):
    src = tiny(tmp_path / "keras style.onnx", layout="NHWC", softmax_out=True, classes=3)
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    lines: list[str] = []
    res = import_model(ImportRequest(src, tmp_path / "b", labels=tmp_path / "labels.txt", preset="keras-inception"),
                       log=lines.append)
    man = res.manifest
    assert res.softmax_removed and man.validation["import"]["softmax_removed"]
    assert man.model.name == "keras_style"
    assert man.input.shape == ("batch", 32, 32, 3) and man.output.shape == ("batch", 3)
    assert man.validation["parity"]["compared"].startswith("probabilities")
    assert any("Softmax: removed" in line for line in lines)
    assert any("pixels 0..255 (from the mean/std values" in line for line in lines)
    proto = onnx.load(str(res.bundle / "model.onnx"))
    assert "Softmax" not in {n.op_type for n in proto.graph.node}
    # NHWC: no transpose of ours; the model's own follows
    assert [n.op_type for n in proto.graph.node[:5]] == ["Cast", "Gather", "Mul", "Add", "Transpose"]
    frames = np.random.default_rng(4).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    with OrtRunner(res.bundle / "model.onnx") as r, OrtRunner(src) as o:
        logits = r.infer(frames)
        probs = o.infer(importer.reference_input(frames, man.preprocess, "NHWC"))
    np.testing.assert_allclose(softmax(logits), probs, atol=1e-6)
    assert (logits.argmax(1) == probs.argmax(1)).all() and not np.allclose(logits.sum(1), 1.0)


def test_bgr_model_gets_no_swap_and_flags_override_the_preset(tmp_path):
    src = tiny(tmp_path / "caffe.onnx", hw=("h", "w"))
    res = import_model(ImportRequest(src, tmp_path / "b", preset="caffe", input_size=(40, 48), crop_fraction=1.0,
                                     interpolation="area", std=(2.0, 2.0, 2.0)))
    pre = res.manifest.preprocess
    assert (pre.height, pre.width, pre.crop_fraction, pre.interpolation) == (40, 48, 1.0, "area")
    assert pre.color_order == "BGR" and pre.mean == (104.0, 117.0, 123.0) and pre.std == (2.0,) * 3
    assert pre.input_range == 255.0 and res.manifest.input.shape == ("batch", 40, 48, 3)
    assert res.manifest.validation["import"]["flags"] == {"std": [2.0] * 3, "input_size": [40, 48],
                                                          "crop_fraction": 1.0, "interpolation": "area"}
    ops = [n.op_type for n in onnx.load(str(res.bundle / "model.onnx")).graph.node]
    assert ops[:4] == ["Cast", "Transpose", "Mul", "Add"]


def test_explicit_scale_and_names_taken_by_the_model(tmp_path):
    """A model whose own tensors are called image/logits keeps them under other names; --scale 255
    with mean 0, std 1 is raw pixels (the values alone would say 0..1)."""
    src = tiny(tmp_path / "m.onnx")
    m = onnx.load(str(src))
    for n in m.graph.node:
        n.output[:] = ["image" if o == "r" else "logits" if o == "p" else o for o in n.output]
        n.input[:] = ["image" if i == "r" else "logits" if i == "p" else i for i in n.input]
    onnx.save(m, str(src))
    res = import_model(ImportRequest(src, tmp_path / "b", **flags(mean=(0.0,) * 3, std=(1.0,) * 3, scale=255.0)))
    assert res.manifest.preprocess.input_range == 255.0
    assert res.manifest.validation["import"]["pixel_range"] == "--scale"
    onnx.checker.check_model(onnx.load(str(res.bundle / "model.onnx")), full_check=True)


def test_a_model_failing_strict_shape_inference_itself_is_checked_without_it(tmp_path):
    src = tiny(tmp_path / "m.onnx")
    m = onnx.load(str(src))  # an exporter's wrong shape note on an inner tensor (8 channels, not 7)
    m.graph.value_info.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, ["n", 7, 32, 32]))
    onnx.save(m, str(src))
    lines: list[str] = []
    res = import_model(ImportRequest(src, tmp_path / "b", **flags()), log=lines.append)
    assert res.manifest.validation["parity"]["passed"]
    assert any(line.startswith("note: the imported model fails ONNX's strict shape inference itself") for line in lines)


@pytest.mark.parametrize("opset, target", [(18, 17), (20, 17), (11, 13)])
def test_opset_is_brought_to_what_every_target_parses(tmp_path, opset, target):
    """Above 17 TensorRT 8.5/8.6 (JetPack 5, 6.0) cannot parse it; below 13 the INT8 form's per-channel
    DequantizeLinear cannot exist (calibration failed on an opset-11 import). Parity checks the conversion."""
    lines: list[str] = []
    res = import_model(ImportRequest(tiny(tmp_path / "m.onnx", opset=opset), tmp_path / "b", **flags()),
                       log=lines.append)
    assert any(f"opset {opset} converted to {target}" in line for line in lines)
    assert onnx.load(str(tmp_path / "b" / "model.onnx")).opset_import[0].version == target
    assert res.manifest.validation["import"]["opset_original"] == opset
    assert res.manifest.validation["parity"]["passed"]
    if opset < 13:
        from edgekit.quant.calibrate import CalibrateRequest, calibrate_bundle

        calibrate_bundle(CalibrateRequest(res.bundle, min_agreement=0.0, max_drop=1.0))


@pytest.mark.parametrize("preset,norm,layout", [("caffe", "nvinfer", "NCHW"), ("torch-imagenet", "graph", "NCHW"),
                                                ("keras-inception", "nvinfer", "NHWC")])
def test_deepstream_and_triton_exports_of_an_import(tmp_path, preset, norm, layout):
    """export-deepstream finds the front end (export's for NCHW models; Cast, Gather for NHWC ones, which get a
    Transpose of ours so nvinfer feeds NCHW planes as for any bundle), and the rewritten model answers as the
    bundle does; export-triton writes its model."""
    from edgekit.deploy.deepstream import DeepStreamRequest, export_deepstream
    from edgekit.deploy.nvinfer import validate_nvinfer
    from edgekit.deploy.triton import TritonRequest, export_triton
    from tests.deploy.test_deploy import bundle_probs, nvinfer_input, prop

    b = import_model(ImportRequest(tiny(tmp_path / "m.onnx", layout=layout), tmp_path / "b", preset=preset)).bundle
    res = export_deepstream(DeepStreamRequest(b, tmp_path / "ds", "fp32", "desktop-ada"))
    assert res.normalisation == norm
    validate_nvinfer((tmp_path / "ds" / "config_infer_primary.txt").read_text(), tmp_path / "ds")
    p = prop(tmp_path / "ds")
    for path in sample_images()[:2]:
        frame = read_image(path)
        with OrtRunner(tmp_path / "ds" / p["onnx-file"]) as r:
            np.testing.assert_allclose(r.infer(nvinfer_input(frame, b, p)), bundle_probs(b, frame), atol=1e-5)
    models = export_triton(TritonRequest(b, tmp_path / "triton"))
    assert models and (models[0].path / "config.pbtxt").is_file()


# ---------------------------------------------------------------- refusals


REFUSALS = [
    ({"extra_input": True}, {}, r"has 2 input\(s\) \(x, mask\) and 2 output\(s\).*one image input and one output"),
    ({"extra_output": True}, {}, r"has 1 input\(s\) \(x\) and 2 output\(s\) \(y, p\)"),
    ({"rank": 3}, {}, r"input x is 3-D float \[n, 3, 32\]; edgekit imports classifiers whose input is one 4-D "
                      "float32"),
    ({"in_type": TensorProto.UINT8}, {}, r"input x is 4-D uint8 .*re-export it with such an input and without "
                                         "preprocessing of its own"),
    ({"hw": ("h", "w")}, {}, r"does not fix its height and width; pass --input-size N \(or HxW\)"),
    ({"layout": "NHWC"}, {}, r"--layout nchw contradicts the input x \[n, 32, 32, 3\]: its channel dimension "
                             r"would be 32 while dimension 3 is 3; pass --layout nhwc"),
    ({}, {"layout": "nhwc"}, r"--layout nhwc contradicts the input x \[n, 3, 32, 32\].*pass --layout nchw"),
    ({"channels": 1}, {}, r"has 1 channels \(NCHW\); edgekit imports colour classifiers with 3 channels"),
    ({"out_4d": True}, {}, r"output y is float32 \[n, 5, 1, 1\]; edgekit imports classifiers whose output is "
                           r"float32 \[N, classes\]: flatten"),
    ({}, {"input_size": (64, 64)}, r"fixes its input at 32x32 .*drop --input-size 64x64 or pass 32x32"),
    ({"hw": ("h", "w")}, {"input_size": (4000, 300)}, r"--input-size 4000x300 is beyond edgekit's limit of 1024"),
    ({}, {"layout": None, "color": None}, r"missing --layout, --color: an ONNX file does not record .*--preset "
                                          r"whose fields they override \(keras-inception, torch-imagenet, caffe\)"),
    ({}, {"preset": "keras-inceptoin"}, r"unknown preset 'keras-inceptoin'; did you mean 'keras-inception'\?"),
    ({}, {"scale": 100.0}, r"--scale must be 1 .* or 255"),
    ({}, {"name": "../x"}, r"--name '../x' must be a plain name"),
]


@pytest.mark.parametrize("graph,req,match", REFUSALS)
def test_refusals(tmp_path, graph, req, match):
    src = tiny(tmp_path / "m.onnx", **graph)
    with pytest.raises(UsageError, match=match) as err:
        import_model(ImportRequest(src, tmp_path / "b", **flags(**req)))
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_refuses_files_that_are_not_onnx_and_labels_that_do_not_fit(tmp_path):
    (tmp_path / "notes.onnx").write_text("this is not a model\n")
    with pytest.raises(UsageError, match=r"notes.onnx is not a readable ONNX model \(.*\); export your classifier "
                                         r"to ONNX first"):
        import_model(ImportRequest(tmp_path / "notes.onnx", tmp_path / "b", **flags()))
    with pytest.raises(UsageError, match=r"missing.onnx does not exist or is not a file"):
        import_model(ImportRequest(tmp_path / "missing.onnx", tmp_path / "b", **flags()))
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    with pytest.raises(UsageError, match=r"labels file .* has 3 names but the model has 5 classes"):
        import_model(ImportRequest(tiny(tmp_path / "m.onnx"), tmp_path / "b", labels=tmp_path / "labels.txt",
                                   **flags()))
    assert not (tmp_path / "b").exists()


def test_existing_bundle_needs_force_and_parity_failure_leaves_nothing(tmp_path, monkeypatch):
    src = tiny(tmp_path / "m.onnx")
    out = tmp_path / "b"
    import_model(ImportRequest(src, out, **flags()))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UsageError, match="already exists; pass --force to replace it"):
        import_model(ImportRequest(src, out, **flags()))
    import edgekit.export.parity

    monkeypatch.setattr(edgekit.export.parity, "PARITY_TOLERANCE", 0.0)  # the limit every bundle's parity shares
    with pytest.raises(ExportError, match=r"the wrapped model does not match m.onnx: relative error .* no bundle "
                                          r"written"):
        import_model(ImportRequest(src, out, force=True, **flags()))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old bundle as it was
    with pytest.raises(ExportError):
        import_model(ImportRequest(src, tmp_path / "new", **flags()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "m.onnx"]  # no staging left behind


# ---------------------------------------------------------------- the command line


def edgekit(*args: str) -> tuple[int, str, str]:
    """`edgekit ARGS` through main()'s one error handler, with the import command registered."""
    from edgekit.cli import cli
    from edgekit.cli.export import import_cmd

    registered = "import" in cli.commands
    cli.add_command(import_cmd)
    try:
        res = CliRunner().invoke(_main, list(args), catch_exceptions=False)
    finally:
        if not registered:
            cli.commands.pop("import", None)
    return res.exit_code, res.stdout, res.stderr


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.pass_context
def _main(ctx: click.Context) -> None:
    from edgekit.cli import main

    main(list(ctx.args))


def test_cli_flags_one_number_for_all_channels_and_one_line_errors(tmp_path):
    src = tiny(tmp_path / "m.onnx", layout="NHWC", hw=("h", "w"))
    code, out, err = edgekit("import", str(src), "--layout", "NHWC", "--color", "bgr", "--mean", "127.5",
                             "--std", "127.5,64,32", "--input-size", "24x40", "-o", str(tmp_path / "b"))
    assert code == 0, err
    assert str(tmp_path / "b") in out and "5 classes, parity" in out and "parity: max relative error" in err
    pre = mf.read(tmp_path / "b").preprocess
    assert pre.mean == (127.5,) * 3 and pre.std == (127.5, 64.0, 32.0) and (pre.height, pre.width) == (24, 40)
    code, out, err = edgekit("import", str(src), "--preset", "keras-inception", "-o", str(tmp_path / "c"))
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: the input x [n, h, w, 3] does not fix its height and width; pass --input-size")
    code, _, err = edgekit("import", str(src), "--mean", "1,2", "-o", str(tmp_path / "c"))
    assert code == 2 and "expected R,G,B or one number for all three, got '1,2'" in err
    code, _, err = edgekit("import", str(src), "--input-size", "0", "-o", str(tmp_path / "c"))
    assert code == 2 and "expected N or HxW" in err
    code, out, _ = edgekit("import", "--help")
    assert code == 0 and "Example" in out and "edgekit import model.onnx --preset keras-inception" in out
    from edgekit.cli.export import _PRESETS

    assert list(_PRESETS) == list(PRESETS)  # --help describes every preset there is


# ---------------------------------------------------------------- a user's own torch.onnx.export

TORCH_SIZE = 96


@pytest.fixture(scope="module")
def user_torch_export(tmp_path_factory):
    """googlenet with random weights, exported as a user would: plain torch.onnx.export, float NCHW,
    no preprocessing inside, a dynamic batch."""
    torch = pytest.importorskip("torch")
    from edgekit.zoo import get_spec
    from edgekit.zoo.weights import build

    model, _ = build(get_spec("googlenet"), "random", TORCH_SIZE)
    path = tmp_path_factory.mktemp("user") / "my googlenet.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation: users still call it this way
        torch.onnx.export(model, (torch.zeros(1, 3, TORCH_SIZE, TORCH_SIZE),), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "n"}, "output": {0: "n"}})
    return model, path


def test_user_torch_export_imports_calibrates_classifies_and_parses(user_torch_export, tmp_path, monkeypatch):
    import torch

    from edgekit.preprocess import to_model_input
    from edgekit.quant.calibrate import CalibrateRequest, calibrate_bundle
    from edgekit.runtime.loader import load

    model, src = user_torch_export
    res = import_model(ImportRequest(src, tmp_path / "g", preset="torch-imagenet"))
    man = res.manifest
    assert man.model.name == "my_googlenet" and man.model.num_classes == 1000 and man.input.shape[0] == "batch"
    assert man.validation["parity"]["passed"] and not res.softmax_removed
    assert "pytorch" in man.model.version
    # parity with PyTorch itself on real photographs
    pre = man.preprocess
    assert (pre.mean, pre.std, pre.input_range, pre.color_order) == (PRESETS["torch-imagenet"].mean,
                                                                     PRESETS["torch-imagenet"].std, 1.0, "RGB")
    frames = np.stack([fit_frame(read_image(p), pre) for p in sample_images()])
    with torch.no_grad():
        ref = model(torch.from_numpy(to_model_input(frames, pre))).numpy()
    with OrtRunner(res.bundle / "model.onnx") as r:
        got = r.infer(frames)
    assert (got.argmax(1) == ref.argmax(1)).all() and len(set(ref.argmax(1))) > 1
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    # the runtime classifies with it, as with an exported bundle
    with load(res.bundle, backend="onnxruntime") as clf:
        preds = [clf.classify(read_image(p)) for p in sample_images()]
    assert [p.indices[0] for p in preds] == list(ref.argmax(1))
    # INT8: calibrate and gate (random weights: the gate has nothing meaningful to judge, so it is opened)
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    cal = calibrate_bundle(CalibrateRequest(res.bundle, num_images=16, min_agreement=0.0))
    assert {"int8", "int8-cpu", "fp16"} <= set(cal.figures)
    after = mf.read(res.bundle)
    assert after.validation["import"] == man.validation["import"] and after.artifact("onnx", "int8")
    q = onnx.load(str(res.bundle / "model.int8.onnx"))
    convs = sum(n.op_type == "Conv" for n in onnx.load(str(src)).graph.node)
    assert _convs_with_qdq(q) == convs
    code, out, err = edgekit("classify", str(res.bundle), "--precision", "int8-cpu", "--json")
    assert code == 0, err
    assert len(out.splitlines()) == len(sample_images())
    _parses(res.bundle, ("model.onnx", "model.int8.onnx", "model.fp16.onnx"))
    _builds_int8(res.bundle)


def _convs_with_qdq(q) -> int:
    """Convolutions whose input and weight both come through a DequantizeLinear."""
    producer = {o: n for n in q.graph.node for o in n.output}
    return sum(n.op_type == "Conv" and all(getattr(producer.get(i), "op_type", "") == "DequantizeLinear"
                                           for i in n.input[:2]) for n in q.graph.node)


def _builds_int8(bundle: Path) -> None:
    """edgekit build's own code path, TensorRT-RTX's builder on the CPU (no Runtime is made)."""
    pytest.importorskip("tensorrt_rtx")
    from edgekit.profiles import Batch
    from edgekit.trt.engine import EngineRequest, build

    res = build(EngineRequest(bundle, "int8", "desktop-ada", batch=Batch(1, 2, 4), prefer="tensorrt_rtx"))
    assert res.path.stat().st_size > 1_000_000 and res.entry["strongly_typed"]
    assert [e["precision"] for e in mf.read(bundle).engines] == ["int8"]


def _parses(bundle: Path, files: tuple[str, ...]) -> None:
    pytest.importorskip("tensorrt_rtx")
    from edgekit.trt.parse import parse

    for name in files:
        report = parse(bundle / name, prefer="tensorrt_rtx")
        assert report.ok, (name, [str(i) for i in report.issues])
        assert report.inputs[0][0] == "image" and "UINT8" in report.inputs[0][1], name


# ---------------------------------------------------------------- Keras through tf2onnx


def _keras_python() -> Path:
    """The .venv-keras interpreter with the pinned TensorFlow and tf2onnx (tests/foreign/keras_env.py)."""
    from tests.foreign import keras_env

    python, why = keras_env.python()
    if python is None:
        pytest.fail(why)
    return python


@pytest.fixture(scope="session")
def keras_inception(tmp_path_factory):
    """(the tf2onnx ONNX file, Keras' own softmax outputs, the model-size BGR crops they were computed on)."""
    t0 = time.perf_counter()
    python = _keras_python()
    made = time.perf_counter() - t0
    out = tmp_path_factory.mktemp("keras")
    pre = Preprocess(299, 299, PRESETS["keras-inception"].crop_fraction, PRESETS["keras-inception"].interpolation)
    frames = np.stack([fit_frame(read_image(p), pre) for p in sample_images()])
    np.save(out / "frames.npy", frames)
    done = subprocess.run([str(python), str(KERAS_SCRIPT), str(out / "frames.npy"), str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"\nkeras fixture: venv {made:.1f} s; {done.stdout.strip()}; total {time.perf_counter() - t0:.1f} s")
    return out / "keras_inception_v3.onnx", dict(np.load(out / "keras_reference.npz")), frames


def test_keras_inception_through_tf2onnx(keras_inception, tmp_path, monkeypatch):
    from edgekit.quant.calibrate import CalibrateRequest, calibrate_bundle
    from edgekit.runtime.loader import load

    src, keras, frames = keras_inception
    labels = [f"part_{i}" for i in range(10)]
    (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n")
    res = import_model(ImportRequest(src, tmp_path / "k", labels=tmp_path / "labels.txt", preset="keras-inception"))
    man = res.manifest
    assert res.softmax_removed and man.preprocess.height == 299 and man.model.opset == 17
    assert man.validation["import"]["producer_name"] == "tf2onnx" and man.input.shape[0] == "batch"
    assert man.validation["import"]["tensors_renamed"] > 0  # tf2onnx's 'name:0' cannot go in a calibration cache
    keras_top1 = keras["probs"].argmax(1)
    assert len(set(keras_top1)) > 1  # else the comparison could not fail
    with OrtRunner(res.bundle / "model.onnx") as r:
        probs = softmax(r.infer(frames))
    assert (probs.argmax(1) == keras_top1).all()
    assert np.abs(probs - keras["probs"]).max() < 5e-4  # TensorFlow and ONNX Runtime sum differently
    with load(res.bundle, backend="onnxruntime") as clf:  # the runtime crops the photographs the same way
        assert [clf.classify(read_image(p)).label for p in sample_images()] == [labels[i] for i in keras_top1]
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    calibrate_bundle(CalibrateRequest(res.bundle, num_images=16, num_val_images=8, min_agreement=0.0))
    q = onnx.load(str(res.bundle / "model.int8.onnx"))
    assert _convs_with_qdq(q) == int(keras["conv_layers"]) == 94  # every Keras Conv2D quantized
    cached = [line.rpartition(": ")[0] for line in (res.bundle / "calibration.cache").read_text().splitlines()[1:]]
    assert cached and not [t for t in cached if ":" in t]
    _parses(res.bundle, ("model.onnx", "model.int8.onnx"))
    _builds_int8(res.bundle)


def test_cli_explicit_flags_equal_the_keras_preset(keras_inception, tmp_path):
    src = keras_inception[0]
    code, _, err = edgekit("import", str(src), "--layout", "nhwc", "--mean", "127.5", "--std", "127.5",
                           "--color", "rgb", "-o", str(tmp_path / "flags"))
    assert code == 0, err
    code, _, err = edgekit("import", str(src), "--preset", "keras-inception", "-o", str(tmp_path / "preset"))
    assert code == 0, err
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("flags", "preset"))
    assert a["preprocess"] == b["preprocess"]
    assert a["validation"]["import"]["preset"] is None and b["validation"]["import"]["preset"] == "keras-inception"


def test_inspect_says_what_was_imported(tmp_path):
    from edgekit.runtime.inspect import describe

    b = import_model(ImportRequest(tiny(tmp_path / "m.onnx", layout="NHWC", softmax_out=True), tmp_path / "b",
                                   preset="keras-inception")).bundle
    text = describe(b)
    assert "parity (ONNX Runtime vs the imported model)" in text
    assert "import: m.onnx (" in text and "NHWC input, preset keras-inception" in text
    assert "its Softmax removed (logits out)" in text
