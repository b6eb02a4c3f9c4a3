"""Checkpoints in the shapes users bring them; published weights offline; unsafe pickles refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from edgekit import weights  # noqa: E402
from edgekit.errors import UsageError, WeightsError  # noqa: E402
from edgekit.zoo import get_spec  # noqa: E402


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
    from edgekit.zoo.bn_inception import BNInception, caffe_key_map

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
    assert "refusing to load" in str(e.value) and "run code" in str(e.value)


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
    t0 = time.perf_counter()
    with pytest.raises(WeightsError) as e:
        weights.build(get_spec(name), "imagenet")
    assert time.perf_counter() - t0 < 30
    msg = str(e.value)
    assert "cannot download" in msg and "--weights PATH" in msg and "cached in" in msg


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
