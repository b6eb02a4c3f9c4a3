from __future__ import annotations

import pytest

from edgekit.errors import UsageError
from edgekit.zoo import get_spec, list_models

SIX = ["googlenet", "bn_inception", "inception_v3", "inception_v4", "inception_resnet_v1", "inception_resnet_v2"]


def test_all_six_registered_in_order():
    assert [s.name for s in list_models()] == SIX


def test_unknown_name_suggests_closest():
    with pytest.raises(UsageError) as e:
        get_spec("inceptionv5")
    msg = str(e.value)
    assert "unknown model 'inceptionv5'" in msg and "did you mean" in msg and "inception_v4" in msg
    assert "edgekit models" in msg


def test_aliases_and_spelling_variants():
    assert get_spec("inception-v4").name == "inception_v4"
    assert get_spec("inceptionv4").name == "inception_v4"
    assert get_spec("inception_v1").name == "googlenet"


def test_specs_are_frozen():
    spec = get_spec("googlenet")
    with pytest.raises(AttributeError):
        spec.input_size = 10  # type: ignore[misc]


@pytest.mark.parametrize("name", ["inception_v3", "inception_v4", "inception_resnet_v2"])
def test_timm_weights_preprocessing_matches_timm_config(name):
    """Our spec's preprocessing is what timm says the published weights were trained with."""
    timm = pytest.importorskip("timm")
    spec = get_spec(name)
    src = spec.weight_source("imagenet")
    cfg = timm.models.get_pretrained_cfg(src.ident)
    assert cfg is not None
    assert tuple(cfg.mean) == src.mean and tuple(cfg.std) == src.std
    assert cfg.crop_pct == pytest.approx(spec.crop_fraction)
    assert cfg.interpolation == spec.interpolation
    assert cfg.input_size[1] == spec.input_size


@pytest.mark.parametrize("spec", list_models(), ids=lambda s: s.name)
def test_param_count_matches_definition(spec):
    pytest.importorskip("torch")
    model = spec.builder(1000, spec.input_size)
    n = sum(p.numel() for p in model.parameters())
    assert n / 1e6 == pytest.approx(spec.params_m, abs=0.01)
