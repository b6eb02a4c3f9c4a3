"""Calibration on the inputs a hostile or unlucky user gives it (found by a fault-injection pass):
fixed-batch and float-input bundles, models with nothing to quantize, overlapping data reached
by another path, unreadable files, more validation images than the default, bad options."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from edgekit import bundle as bundle_mod  # noqa: E402
from edgekit import manifest as mf  # noqa: E402
from edgekit.cli import cli  # noqa: E402
from edgekit.errors import UsageError  # noqa: E402
from edgekit.quant.calibrate import CalibrateRequest, calibrate_bundle  # noqa: E402


def _photos(root, n=24, size=72, classes=("0", "1")):
    rng = np.random.default_rng(0)
    for k in range(n):
        d = root / classes[k % len(classes)]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{k:03d}.png"), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return root


@pytest.mark.parametrize("kw", [{"batch": 3}, {"float_input": True}], ids=["static-batch-3", "float-input"])
def test_fixed_batch_and_float_input_bundles_calibrate(export_bundle, tmp_path, kw):
    b = tmp_path / "b"
    shutil.copytree(export_bundle("googlenet", input_size=64, **kw), b)
    res = calibrate_bundle(CalibrateRequest(b, _photos(tmp_path / "d"), min_agreement=0.0, fp16=False))
    assert res.figures["int8"]["images"] >= 4
    assert mf.read(b).artifact("onnx", "int8") is not None


def _replace_model(b, model):
    onnx.save(model, str(b / "model.onnx"))
    man = mf.read(b)
    art = man.artifact("onnx", "fp32")
    f = b / "model.onnx"
    man = man.with_artifact(mf.Artifact(art.path, art.kind, bundle_mod.sha256(f), f.stat().st_size, art.precision))
    (b / "manifest.json").write_text(man.to_json())


def test_a_model_with_nothing_to_quantize_is_refused(export_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(export_bundle("googlenet", input_size=64), b)
    g = helper.make_graph(
        [helper.make_node("Cast", ["input"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("ReduceMean", ["f"], ["m"], axes=[1, 2], keepdims=0),
         helper.make_node("Slice", ["m", "s", "e"], ["logits"])], "nothing",
        [helper.make_tensor_value_info("input", TensorProto.UINT8, ["batch", 64, 64, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])],
        [onnx.numpy_helper.from_array(np.array([0]), "s"), onnx.numpy_helper.from_array(np.array([1]), "e")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    _replace_model(b, m)
    before = sorted(p.name for p in b.iterdir())
    with pytest.raises(UsageError, match="no Conv, Gemm or MatMul layer"):
        calibrate_bundle(CalibrateRequest(b, _photos(tmp_path / "d"), min_agreement=0.0))
    assert sorted(p.name for p in b.iterdir()) == before


def test_overlap_is_caught_through_a_symlink_and_an_absolute_path(googlenet_bundle, tmp_path):
    data = _photos(tmp_path / "d")
    (tmp_path / "link").symlink_to(data)
    for val in (tmp_path / "link" / "0", (data / "0").resolve()):
        with pytest.raises(UsageError, match="must not overlap"):
            calibrate_bundle(CalibrateRequest(googlenet_bundle, data, val_data=val))


def test_unreadable_files_are_skipped_with_their_reason(export_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(export_bundle("googlenet", input_size=64), b)
    data = _photos(tmp_path / "d")
    (data / "0" / "empty.png").write_bytes(b"")
    np.save(data / "0" / "wrong.npy", np.zeros((2, 5, 5, 3), np.float32))
    said: list[str] = []
    calibrate_bundle(CalibrateRequest(b, data, min_agreement=0.0, fp16=False), log=said.append)
    warning = next(s for s in said if "skipped" in s)
    assert "empty.png" in warning and "(first:" in warning


def test_more_validation_images_than_the_default_are_said_and_can_be_used(export_bundle, tmp_path, monkeypatch):
    from edgekit.quant import calib_inputs

    monkeypatch.setattr(calib_inputs, "DEFAULT_VAL_IMAGES", 10)  # _gather reads it there
    b = tmp_path / "b"
    shutil.copytree(export_bundle("googlenet", input_size=64), b)
    said: list[str] = []
    res = calibrate_bundle(CalibrateRequest(b, _photos(tmp_path / "c"), val_data=_photos(tmp_path / "v", n=30),
                                            min_agreement=0.0, fp16=False), log=said.append)
    assert res.figures["int8"]["images"] == 10
    assert any("10 of the 30 validation images" in s and "--num-val-images" in s for s in said)
    res = calibrate_bundle(CalibrateRequest(b, tmp_path / "c", val_data=tmp_path / "v", min_agreement=0.0,
                                            fp16=False, num_val_images=30))
    assert res.figures["int8"]["images"] == 30


@pytest.mark.parametrize("args,message", [
    (["--max-drop", "-5"], "between 0 and 100 points, got -5"),
    (["--cache-trt-version", "garbage"], "is not a TensorRT version"),
    (["--method", "percentile", "--percentile", "nan"], "--percentile must be in"),
    (["--holdout", "0.99"], "held out every image"),
    (["--num-val-images", "0"], "--num-val-images must be at least 1"),
])
def test_bad_options_are_one_line_errors_before_any_work(googlenet_bundle, tmp_path, args, message):
    data = _photos(tmp_path / "d", n=6, classes=("0",))
    res = CliRunner().invoke(cli, ["calibrate", str(googlenet_bundle), "--data", str(data), *args])
    # the CLI's one handler (edgekit.cli.main) prints an EdgekitError as one line and exits non-zero
    assert isinstance(res.exception, UsageError), res.output
    assert message in str(res.exception) and "\n" not in str(res.exception)
    assert "calibrating [" not in res.output  # refused before any image was read


def test_inspect_survives_a_crafted_gate_record(googlenet_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(googlenet_bundle, b)
    man = mf.read(b)
    crafted = {"fallback_layers": [1, 2], "tensorrt": {"top1_agreement": "x", "top1_agreement_95": 5,
                                                       "accuracy": {"drop_95": "y"}, "cosine": None}}
    (b / "manifest.json").write_text(replace(man, validation={**man.validation, "int8": crafted}).to_json())
    res = CliRunner().invoke(cli, ["inspect", str(b)])
    assert res.exit_code == 0, res.output
    assert "kept in FP32: 1, 2" in res.stdout
    assert re.search(r"^  int8 \(TensorRT\) +\? ", res.stdout, re.M), res.stdout  # its figures' cells: ?
