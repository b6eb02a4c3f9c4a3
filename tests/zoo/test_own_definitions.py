"""Our own definitions against the papers' published structure and reference param counts."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from edgekit.zoo.definitions.bn_inception import BNInception, caffe_key_map  # noqa: E402
from edgekit.zoo.definitions.inception_resnet_v1 import InceptionResNetV1  # noqa: E402


def _count(model, skip=()):
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith(skip))


def test_bn_inception_stage_shapes_follow_the_paper():
    """Ioffe & Szegedy 2015, Figure 5: output size per stage at 224x224 input."""
    m = BNInception().eval()
    x = torch.zeros(1, 3, 224, 224)
    shapes = {}
    with torch.no_grad():
        x = m.stem[0](x)
        shapes["conv1"] = tuple(x.shape[1:])
        x = m.stem[1:](x)
        shapes["pool2"] = tuple(x.shape[1:])
        for cfg, block in zip(("3a", "3b", "3c", "4a", "4b", "4c", "4d", "4e", "5a", "5b"), m.blocks, strict=False):
            x = block(x)
            shapes[cfg] = tuple(x.shape[1:])
    assert shapes["conv1"] == (64, 112, 112)
    assert shapes["pool2"] == (192, 28, 28)
    # the paper's table: 3a 256, 3b 320, 3c 576 (stride 2), 4a/4b 576, 4c/4d 608, 4e 1056, 5a/5b 1024
    assert shapes["3a"] == (256, 28, 28) and shapes["3b"] == (320, 28, 28)
    assert shapes["3c"] == (576, 14, 14)
    assert shapes["4a"] == shapes["4b"] == (576, 14, 14)
    assert shapes["4c"] == shapes["4d"] == (608, 14, 14)
    assert shapes["4e"] == (1056, 7, 7)
    assert shapes["5a"] == shapes["5b"] == (1024, 7, 7)
    assert m(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_bn_inception_param_count_matches_reference():
    # pretrainedmodels (Cadene) bninception, the port of the authors' Caffe model:
    # 11,295,240 parameters at 1000 classes (counted with its BNInception(num_classes=1000)).
    assert _count(BNInception(1000)) == pytest.approx(11_295_240, rel=0.01)


def test_bn_inception_caffe_names_cover_every_tensor():
    m = BNInception()
    names = caffe_key_map(m)
    assert len(names) == len(m.state_dict())
    assert names["stem.0.conv.weight"] == "conv1_7x7_s2.weight"
    assert names["blocks.0.bd_1.bn.running_var"] == "inception_3a_double_3x3_1_bn.running_var"
    assert names["blocks.9.proj.conv.bias"] == "inception_5b_pool_proj.bias"
    assert len(set(names.values())) == len(names)


def test_inception_resnet_v1_stage_shapes_follow_the_paper():
    """Szegedy et al. 2017, Figures 9-14: 35x35x256, 17x17x896, 8x8x1792 at 299x299 input."""
    m = InceptionResNetV1().eval()
    with torch.no_grad():
        x = m.stem(torch.zeros(1, 3, 299, 299))
        assert tuple(x.shape[1:]) == (256, 35, 35)
        x = m.stage_a(x)
        assert tuple(x.shape[1:]) == (256, 35, 35)
        x = m.reduction_a(x)
        assert tuple(x.shape[1:]) == (896, 17, 17)
        x = m.reduction_b(m.stage_b(x))
        assert tuple(x.shape[1:]) == (1792, 8, 8)
        assert tuple(m.stage_c(x).shape[1:]) == (1792, 8, 8)
    assert len(m.stage_a) == 5 and len(m.stage_b) == 10 and len(m.stage_c) == 6
    assert [b.scale for b in (m.stage_a[0], m.stage_b[0], m.stage_c[0])] == [0.17, 0.10, 0.20]
    assert m.stage_c[-1].relu is False and m.stage_c[-1].scale == 1.0


def test_inception_resnet_v1_param_count_matches_reference():
    # facenet-pytorch InceptionResnetV1 (port of the TF-slim reference): 22,564,096 parameters
    # up to the 1792-d pooled features (its embedding head differs from an ImageNet classifier).
    assert _count(InceptionResNetV1(1000), skip=("classif",)) == pytest.approx(22_564_096, rel=0.01)
