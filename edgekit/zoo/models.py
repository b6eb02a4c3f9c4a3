"""The six Inception classifiers. Specs are data; builders import torch when called."""

from __future__ import annotations

from typing import Any

from edgekit.deps import require
from edgekit.zoo.registry import ModelSpec, WeightSource, register

HALF = (0.5, 0.5, 0.5)


def _googlenet(num_classes: int, input_size: int) -> Any:
    torchvision = require("torchvision", "building googlenet")
    # transform_input off: the ImageNet weights' own normalisation (mean = std = 0.5, what
    # torchvision's transform_input converts to) is done once, in the preprocessing graph.
    return torchvision.models.googlenet(
        weights=None, num_classes=num_classes, aux_logits=False, transform_input=False,
        init_weights=True,
    )


def _timm(arch: str) -> Any:
    def build(num_classes: int, input_size: int) -> Any:
        timm = require("timm", f"building {arch}")
        return timm.create_model(arch, pretrained=False, num_classes=num_classes)

    return build


def _bn_inception(num_classes: int, input_size: int) -> Any:
    require("torch", "building bn_inception")
    from edgekit.zoo.definitions.bn_inception import BNInception

    return BNInception(num_classes)


def _inception_resnet_v1(num_classes: int, input_size: int) -> Any:
    require("torch", "building inception_resnet_v1")
    from edgekit.zoo.definitions.inception_resnet_v1 import InceptionResNetV1

    return InceptionResNetV1(num_classes)


@register
def googlenet() -> ModelSpec:
    return ModelSpec(
        name="googlenet", version="Inception v1", aliases=("inception_v1",),
        description="GoogLeNet (Szegedy et al. 2014)", definition="torchvision",
        input_size=224, min_input_size=32, crop_fraction=0.875, interpolation="bilinear",
        params_m=6.62, builder=_googlenet,
        weights=(WeightSource("imagenet", "torchvision", "GoogLeNet_Weights.IMAGENET1K_V1", HALF, HALF,
                              licence="BSD-3-Clause (torchvision)"),),
        default_mean=HALF, default_std=HALF,
        checkpoint_note="torchvision's GoogLeNet with transform_input=True, as fine-tuned from its ImageNet weights",
        checkpoint_alternative="trained with transform_input=False and ImageNet normalisation, pass "
        "--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225",
    )


@register
def bn_inception() -> ModelSpec:
    return ModelSpec(
        name="bn_inception", version="Inception v2", aliases=("inception_v2", "bninception"),
        description="BN-Inception (Ioffe & Szegedy 2015)", definition="edgekit (paper, Fig. 5)",
        input_size=224, min_input_size=32, crop_fraction=0.875, interpolation="bilinear",
        params_m=11.30, builder=_bn_inception,
        # The authors' Caffe weights, ported to PyTorch by the pretrainedmodels project:
        # BGR pixels in 0..255 minus a per-channel mean, no std.
        weights=(WeightSource(
            "imagenet", "url",
            "http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth",
            (104.0, 117.0, 128.0), (1.0, 1.0, 1.0), color_order="BGR", input_range=255.0,
            licence="BSD-3-Clause (pretrainedmodels)"),),
        default_mean=(104.0, 117.0, 128.0), default_std=(1.0, 1.0, 1.0),
        default_color_order="BGR", default_input_range=255.0,
        size_multiple=32,
        size_note="its stride-2 pass-through modules (3c, 4e) concatenate a ceil-mode pooling "
        "with a strided convolution, which agree in size only when the input is a multiple of 32",
    )


@register
def inception_v3() -> ModelSpec:
    return ModelSpec(
        name="inception_v3", version="Inception v3", aliases=("inceptionv3",),
        description="Inception v3 (Szegedy et al. 2015)", definition="timm",
        input_size=299, min_input_size=75, crop_fraction=0.875, interpolation="bicubic",
        params_m=23.83, builder=_timm("inception_v3"),
        weights=(
            # torchvision's weights; they expect mean = std = 0.5 (see timm's pretrained config)
            WeightSource("imagenet", "timm", "inception_v3.tv_in1k", HALF, HALF, licence="apache-2.0"),
            WeightSource("imagenet-tf", "timm", "inception_v3.tf_in1k", HALF, HALF, licence="apache-2.0"),
        ),
        default_mean=HALF, default_std=HALF,
    )


@register
def inception_v4() -> ModelSpec:
    return ModelSpec(
        name="inception_v4", version="Inception v4", aliases=("inceptionv4",),
        description="Inception v4 (Szegedy et al. 2016)", definition="timm",
        input_size=299, min_input_size=75, crop_fraction=0.875, interpolation="bicubic",
        params_m=42.68, builder=_timm("inception_v4"),
        weights=(WeightSource("imagenet", "timm", "inception_v4.tf_in1k", HALF, HALF, licence="apache-2.0"),),
        default_mean=HALF, default_std=HALF,
    )


@register
def inception_resnet_v1() -> ModelSpec:
    return ModelSpec(
        name="inception_resnet_v1", version="Inception-ResNet v1", aliases=("inceptionresnetv1",),
        description="Inception-ResNet v1 (Szegedy et al. 2016)", definition="edgekit (paper, Fig. 9-14)",
        input_size=299, min_input_size=75, crop_fraction=0.875, interpolation="bicubic",
        params_m=24.36, builder=_inception_resnet_v1,
        weights=(),  # no ImageNet weights were ever published for this architecture
        default_mean=HALF, default_std=HALF,
    )


@register
def inception_resnet_v2() -> ModelSpec:
    return ModelSpec(
        name="inception_resnet_v2", version="Inception-ResNet v2", aliases=("inceptionresnetv2",),
        description="Inception-ResNet v2 (Szegedy et al. 2016)", definition="timm",
        input_size=299, min_input_size=75, crop_fraction=0.8975, interpolation="bicubic",
        params_m=55.84, builder=_timm("inception_resnet_v2"),
        weights=(WeightSource("imagenet", "timm", "inception_resnet_v2.tf_in1k", HALF, HALF,
                              licence="apache-2.0"),),
        default_mean=HALF, default_std=HALF,
    )
