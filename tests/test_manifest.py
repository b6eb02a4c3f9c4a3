from __future__ import annotations

import json
import shutil

import pytest

from edgekit import bundle as bundle_mod
from edgekit import manifest as mf
from edgekit.errors import BundleError, UsageError


@pytest.fixture()
def bundle_copy(googlenet_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(googlenet_bundle, dst)
    return dst


def _edit(path, fn):
    data = json.loads((path / "manifest.json").read_text())
    fn(data)
    (path / "manifest.json").write_text(json.dumps(data))


def test_round_trip(googlenet_bundle):
    man = mf.read(googlenet_bundle)
    assert mf.parse(man.to_json(), "x") == man


def test_missing_key_names_file_and_key(bundle_copy):
    _edit(bundle_copy, lambda d: d["input"].pop("dtype"))
    with pytest.raises(BundleError, match=r"manifest.json: key 'input.dtype' is missing"):
        mf.read(bundle_copy)


def test_wrong_type_names_key(bundle_copy):
    _edit(bundle_copy, lambda d: d["model"].__setitem__("num_classes", "many"))
    with pytest.raises(BundleError, match=r"key 'model.num_classes' must be int, got str"):
        mf.read(bundle_copy)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["artifacts"].__setitem__(1, "model.onnx"), r"key 'artifacts\[1\]' must be a mapping, got str"),
    (lambda d: d["model"].__setitem__("params", True), r"key 'model.params' must be int, got bool True"),
    (lambda d: d["preprocess"].__setitem__("crop_fraction", 1), None),  # an int where a float goes is fine
    (lambda d: d["engines"].append({"path": 3}), r"key 'engines\[0\].path' must be str, got int 3"),
])
def test_malformed_entries_name_the_key_and_the_fix(bundle_copy, edit, message):
    _edit(bundle_copy, edit)
    if message is None:
        assert mf.read(bundle_copy).preprocess.crop_fraction == 1.0
        return
    with pytest.raises(BundleError, match=message + "; rebuild the bundle with edgekit export"):
        mf.read(bundle_copy)


@pytest.mark.parametrize("bad", ["../outside.onnx", "/etc/passwd", "a/../../x", "C:\\\\x.onnx"])
def test_artifact_paths_must_stay_inside(bundle_copy, bad):
    _edit(bundle_copy, lambda d: d["artifacts"][0].__setitem__("path", bad))
    with pytest.raises(BundleError, match="outside the bundle"):
        mf.read(bundle_copy)


def test_symlink_escaping_the_bundle_is_refused(bundle_copy, tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(bundle_copy / "model.onnx", outside)
    (bundle_copy / "model.onnx").unlink()
    (bundle_copy / "model.onnx").symlink_to(outside)
    man = mf.read(bundle_copy)
    with pytest.raises(BundleError, match="resolves outside the bundle"):
        bundle_mod.artifact_path(bundle_copy, man.artifact("onnx", "fp32"))


def test_sha_mismatch_is_reported_not_used(bundle_copy):
    with open(bundle_copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    man = mf.read(bundle_copy)
    with pytest.raises(BundleError, match="does not match its sha256"):
        bundle_mod.artifact_path(bundle_copy, man.artifact("onnx", "fp32"))
    from edgekit.runtime.loader import load

    with pytest.raises(BundleError, match="does not match its sha256"):
        load(bundle_copy)


def test_newer_schema_refused(bundle_copy):
    _edit(bundle_copy, lambda d: d.__setitem__("schema_version", 99))
    with pytest.raises(BundleError, match="newer than this edgekit understands"):
        mf.read(bundle_copy)


def test_not_json_and_not_bundle(tmp_path):
    with pytest.raises(BundleError, match="is not a bundle: manifest.json is missing"):
        mf.read(tmp_path)
    (tmp_path / "manifest.json").write_text("{nope")
    with pytest.raises(BundleError, match="not valid JSON"):
        mf.read(tmp_path)


def test_find_latest(tmp_path, googlenet_bundle, monkeypatch):
    monkeypatch.setenv("EDGEKIT_BUILD_DIR", str(tmp_path))
    with pytest.raises(UsageError, match="none found"):
        bundle_mod.find_latest()
    shutil.copytree(googlenet_bundle, tmp_path / "a")
    shutil.copytree(googlenet_bundle, tmp_path / "b")
    import os

    os.utime(tmp_path / "a" / "manifest.json", (1, 1))
    assert bundle_mod.find_latest() == tmp_path / "b"


def test_staging_cleans_up_on_interrupt(tmp_path):
    target = tmp_path / "t"
    with pytest.raises(KeyboardInterrupt), bundle_mod.staging(target, force=False) as tmp:
        (tmp / "half.onnx").write_bytes(b"x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


_ENGINE = {"path": "engines/x-0123456789ab.plan", "sha256": "0" * 64, "precision": "fp32", "device": "desktop-ada",
           "trt_flavour": "tensorrt", "trt_version": "10.3.0", "dla_core": None,
           "batch": {"min": 1, "opt": 1, "max": 2}}


def _with_engine(**change):
    def edit(d):
        e = dict(_ENGINE, **change)
        d["engines"].append({k: v for k, v in e.items() if v is not ...})
    return edit


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["input"].__setitem__("name", 'x"\n}\ninput [ {'), r"key 'input.name' must be a tensor name"),
    (lambda d: d["output"].__setitem__("name", "a b"), r"key 'output.name' must be a tensor name"),
    (_with_engine(trt_version="10\ninstance_group [ ]"), r"key 'engines\[0\].trt_version' must be text"),
    (_with_engine(device="../x"), r"key 'engines\[0\].device' must be a plain name"),
    (_with_engine(batch="x"), r"key 'engines\[0\].batch' must be dict"),
    (_with_engine(batch=...), r"key 'engines\[0\].batch' is missing"),
    (_with_engine(batch={"min": 1, "opt": "2", "max": 4}), r"key 'engines\[0\].batch.opt' must be int"),
    (_with_engine(sha256="z" * 64), r"key 'engines\[0\].sha256' must be 64"),
    (lambda d: d["model"].__setitem__("version", "1\x1b]0;pwned\x07"), r"key 'model.version' must be text"),
    (lambda d: d["artifacts"][0].__setitem__("sha256", "g" * 64), r"key 'artifacts\[0\].sha256' must be 64"),
    (lambda d: d["artifacts"][0].__setitem__("bytes", -1), r"key 'artifacts\[0\].bytes' must be 0 or more"),
    (lambda d: d["artifacts"].append(dict(d["artifacts"][0])), r"key 'artifacts\[\d+\].path' lists"),
    (lambda d: d["artifacts"][0].__setitem__("path", "a\0b"), r"is not a plain relative path"),
    (lambda d: d["artifacts"][0].__setitem__("path", "a" * 256), r"is not a plain relative path"),
])
def test_strings_and_numbers_that_reach_files_and_terminals_are_checked(bundle_copy, edit, message):
    _edit(bundle_copy, edit)
    with pytest.raises(BundleError, match=message):
        mf.read(bundle_copy)


def test_a_huge_or_deeply_nested_manifest_is_one_line(bundle_copy):
    (bundle_copy / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="nested too deeply"):
        mf.read(bundle_copy)
    with open(bundle_copy / "manifest.json", "wb") as f:
        f.truncate(mf.MAX_BYTES + 1)
    with pytest.raises(BundleError, match="over 16 MB"):
        mf.read(bundle_copy)
