"""Checkpoints in the shapes users bring them; published weights offline; unsafe pickles refused."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from edgekit.errors import UsageError, WeightsError  # noqa: E402
from edgekit.zoo import get_spec, weights  # noqa: E402


class NotData:  # stands for any object that needs code to unpickle
    pass


def _outputs_equal(a, b, size):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-5)


@pytest.fixture(scope="module")
def googlenet7():
    spec = get_spec("googlenet")
    model = spec.builder(7, 64)
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    return spec, model.eval()


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module_prefix"])
def test_checkpoint_layouts_load_and_read_num_classes(tmp_path, googlenet7, wrap):
    spec, model = googlenet7
    sd = model.state_dict()
    obj = {
        "plain": sd,
        "state_dict": {"state_dict": sd, "epoch": 3},
        "model": {"model": sd, "optimizer_lr": 0.1},
        "module_prefix": {f"module.{k}": v for k, v in sd.items()},
    }[wrap]
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    loaded, info = weights.build(spec, str(path), 64)
    assert info.num_classes == 7 and info.kind == "file" and len(info.sha256) == 64
    assert _outputs_equal(model, loaded, 64)


def test_safetensors(tmp_path, googlenet7):
    st = pytest.importorskip("safetensors.torch")
    spec, model = googlenet7
    path = tmp_path / "w.safetensors"
    st.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded, info = weights.build(spec, str(path), 64)
    assert info.num_classes == 7 and _outputs_equal(model, loaded, 64)


def test_torchvision_inception_v3_keys_with_aux_head_load_into_timm_definition(tmp_path):
    tv = pytest.importorskip("torchvision")
    ref = tv.models.inception_v3(weights=None, aux_logits=True, init_weights=False, num_classes=10,
                                 transform_input=False)
    path = tmp_path / "tv.pth"
    torch.save(ref.state_dict(), path)
    assert any(k.startswith("AuxLogits.") for k in ref.state_dict())
    loaded, info = weights.build(get_spec("inception_v3"), str(path))
    assert info.num_classes == 10
    ref.aux_logits = False
    ref.AuxLogits = None
    assert _outputs_equal(ref, loaded, 299)


def test_bn_inception_loads_caffe_port_names(tmp_path):
    from edgekit.zoo.definitions.bn_inception import BNInception, caffe_key_map

    ref = BNInception(5)
    for p in ref.parameters():
        p.data.normal_(0, 0.05)
    names = caffe_key_map(ref)
    path = tmp_path / "bn.pth"
    torch.save({names[k]: v for k, v in ref.state_dict().items()}, path)
    loaded, info = weights.build(get_spec("bn_inception"), str(path))
    assert info.num_classes == 5 and _outputs_equal(ref, loaded, 224)


def test_wrong_architecture_says_so_with_counts(tmp_path, googlenet7):
    _, model = googlenet7
    path = tmp_path / "googlenet.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(WeightsError) as e:
        weights.build(get_spec("inception_v4"), str(path))
    msg = str(e.value)
    assert "not a inception_v4 checkpoint" in msg and "keys" in msg and "missing" in msg


def test_same_head_name_but_other_architecture(tmp_path):
    # inception_v3 and googlenet both call the classifier 'fc': detected by key mismatch
    v3 = get_spec("inception_v3").builder(3, 299)
    path = tmp_path / "v3.pth"
    torch.save(v3.state_dict(), path)
    with pytest.raises(WeightsError, match=r"does not fit googlenet: \d+ of \d+ keys missing, \d+ unexpected"):
        weights.build(get_spec("googlenet"), str(path))


def test_pickle_needing_code_is_refused(tmp_path, googlenet7):
    _, model = googlenet7
    path = tmp_path / "full.pth"
    torch.save({"state_dict": model.state_dict(), "extra": NotData()}, path)
    with pytest.raises(WeightsError) as e:
        weights.build(get_spec("googlenet"), str(path))
    assert "refusing to load" in str(e.value) and "run code" in str(e.value) and "NotData" in str(e.value)


def test_garbage_file_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        weights.build(get_spec("googlenet"), str(path))


def test_missing_file_and_unknown_source():
    with pytest.raises(UsageError, match="does not exist"):
        weights.build(get_spec("googlenet"), "nope/w.pth")
    with pytest.raises(UsageError, match="choose from imagenet, random, PATH"):
        weights.build(get_spec("googlenet"), "imagenet22k")


@pytest.mark.parametrize("name", ["inception_v4", "googlenet", "bn_inception"])
def test_imagenet_offline_is_fast_and_names_cache(name, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEKIT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    if name == "inception_v4":  # huggingface_hub reads HF_HUB_CACHE once, at import
        hc = pytest.importorskip("huggingface_hub.constants")
        monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf"))
    t0 = time.perf_counter()
    with pytest.raises(WeightsError) as e:
        weights.build(get_spec(name), "imagenet")
    assert time.perf_counter() - t0 < 15
    msg = str(e.value)
    assert "cannot download" in msg and "EDGEKIT_OFFLINE=1 is set" in msg
    assert "--weights random" in msg and "--weights PATH" in msg and str(tmp_path) in msg
    assert e.value.exit_code == 1


def test_random_weights_give_input_dependent_outputs():
    model, info = weights.build(get_spec("googlenet"), "random", 96)
    assert info.kind == "random"
    a = torch.zeros(1, 3, 96, 96)
    b = torch.ones(1, 3, 96, 96)
    with torch.no_grad():
        assert not torch.allclose(model(a), model(b), atol=1e-3)


def test_read_checkpoint_rejects_non_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(WeightsError, match="holds no state_dict"):
        weights.read_checkpoint(Path(path))


# ---------------------------------------------------------------- files that are not checkpoints

INTERNALS = ("pop from", "PytorchStreamReader", "Traceback", "unpickl", "Unpickl", "SafetensorError",
             "deserializ", "miniz", "inline_container", "EOFError", "index out of range")


def _safetensors_bytes(header: dict, data: bytes) -> bytes:
    import json
    import struct

    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def _tiny_checkpoint(tmp_path) -> bytes:
    path = tmp_path / "tiny.pth"
    torch.save({"fc.weight": torch.randn(3, 8), "fc.bias": torch.zeros(3)}, path)
    return path.read_bytes()


def _zip_without_pickle() -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("weights/readme.txt", "these are not the weights")
        z.writestr("weights/values.csv", "1,2,3")
    return buf.getvalue()


BAD_FILES = {
    # name: (contents from tmp_path, what the message says the file is)
    "empty.pth": (lambda tmp: b"", "it is empty (0 bytes)"),
    "random.pth": (lambda tmp: bytes(random.Random(0).getrandbits(8) for _ in range(4096)).replace(b"PK", b"pk")
                   .lstrip(b"\x80"), "not a PyTorch checkpoint or safetensors file (an unknown format)"),
    "truncated.pth": (lambda tmp: _tiny_checkpoint(tmp)[:700], "truncated or damaged zip archive"),
    "truncated_legacy.pth": (lambda tmp: _legacy_checkpoint(tmp)[:200], "damaged PyTorch checkpoint"),
    "page.pth": (lambda tmp: b"\n<!DOCTYPE html>\n<html><head><title>404</title></head><body>Not Found</body></html>",
                 "it is an HTML page"),
    "archive.pth": (lambda tmp: _zip_without_pickle(), "zip archive without data.pkl"),
    "lies.safetensors": (lambda tmp: _safetensors_bytes(
        {"fc.weight": {"dtype": "F32", "shape": [3, 8], "data_offsets": [0, 96]},
         "fc.bias": {"dtype": "F32", "shape": [3], "data_offsets": [96, 4000]}}, bytes(108)),
        "damaged safetensors file: its header lists 4000 bytes of tensors but only 108 follow"),
    "shape_lies.safetensors": (lambda tmp: _safetensors_bytes(
        {"fc.weight": {"dtype": "F32", "shape": [3, 8], "data_offsets": [0, 40]}}, bytes(40)),
        "damaged safetensors file: a tensor's offsets or shape in its header do not match its data"),
    "huge_header.safetensors": (lambda tmp: (10 ** 9).to_bytes(8, "little") + b'{"fc.weight": {', "truncated?"),
    "lfs.pth": (lambda tmp: b"version https://git-lfs.github.com/spec/v1\noid sha256:ab12\nsize 53\n",
                "Git LFS pointer"),
    "notes.pth": (lambda tmp: "weights: see the wiki \u2014 thanks\n".encode(), "it is a text file"),
}


def _legacy_checkpoint(tmp_path) -> bytes:
    path = tmp_path / "legacy.pth"
    torch.save({"fc.weight": torch.randn(3, 8)}, path, _use_new_zipfile_serialization=False)
    return path.read_bytes()


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_file_that_is_not_a_checkpoint_is_one_line_in_user_terms(name, tmp_path, capsys):
    from edgekit.cli import main

    make, says = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(make(tmp_path))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["export", "--model", "googlenet", "--weights", str(path), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    lines = err.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    msg = errors[0]
    assert str(path) in msg and says in msg, msg
    assert not any(x in msg for x in INTERNALS), msg
    assert "torch.save(model.state_dict(), PATH)" in msg or "git lfs pull" in msg, msg
    assert not (tmp_path / "out").exists()


def test_checkpoint_under_the_other_suffix_still_loads(tmp_path, googlenet7):
    st = pytest.importorskip("safetensors.torch")
    spec, model = googlenet7
    as_st = tmp_path / "torch_file.safetensors"
    torch.save(model.state_dict(), as_st)
    as_pth = tmp_path / "st_file.pth"
    st.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(as_pth))
    for path in (as_st, as_pth):
        loaded, info = weights.build(spec, str(path), 64)
        assert info.num_classes == 7 and _outputs_equal(model, loaded, 64)


def test_legacy_torch_format_loads(tmp_path, googlenet7):
    spec, model = googlenet7
    path = tmp_path / "old.pth"
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
    loaded, info = weights.build(spec, str(path), 64)
    assert info.num_classes == 7 and _outputs_equal(model, loaded, 64)


def test_folder_given_as_weights(tmp_path):
    with pytest.raises(UsageError, match="is a folder"):
        weights.build(get_spec("googlenet"), str(tmp_path))
