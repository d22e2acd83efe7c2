"""The architectures segserve trains and serves: the one table that names them.

Adding an architecture is one entry here, its builder in ``segserve.models``, and the batchable method the
model service needs (``bento/service.py``; a test checks that every entry has one). Importing this module
imports no framework: builders are named as ``module:function`` and imported when a model is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Architecture:
    """One architecture.

    name: what requests, the store (``corrosion-<name>``), the CLIs and the metrics call it.
    display_name: for reports and tables. description: for ListModels.
    builder: ``module:function`` building the Keras model (``num_classes``, ``input_shape``, ``encoder``,
        ``encoder_weights`` and its own keyword arguments).
    encoder: the encoder it is built on (``segserve.models.encoder.ENCODERS``).
    builder_kwargs: the builder's arguments that make this architecture (decoder widths, for example).
    shipped: whether ``models/`` ships a release of it, which the server serves by default.
    default: the model a request that names none gets (one shipped architecture), and in_ensemble: the models
        ``ensemble`` averages; both chosen by their val numbers (docs/results/experiments.md).
    published: the original project's published per-image results (ImageNet-pretrained encoder, its own 22-image
        test split), class name -> {"iou", "dice"}: a reference for the reports, not a like-for-like comparison.
    """

    name: str
    display_name: str
    description: str
    builder: str
    encoder: str = "resnet50"
    builder_kwargs: dict[str, Any] = field(default_factory=dict)
    shipped: bool = True
    default: bool = False
    in_ensemble: bool = False
    published: dict[str, dict[str, float]] = field(default_factory=dict)

    def build(self, **kwargs: Any):
        """Build this architecture; ``kwargs`` override the builder's arguments (``encoder_weights``...)."""
        module, function = self.builder.split(":")
        build: Callable[..., Any] = getattr(importlib.import_module(module), function)
        return build(**{"encoder": self.encoder, "name": self.name, **self.builder_kwargs, **kwargs})


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            name="deeplabv3plus",
            display_name="DeepLabV3+",
            description="DeepLabV3+ (ResNet50 encoder, output stride 16)",
            builder="segserve.models.deeplabv3plus:build_deeplabv3plus",
            published={"corrosion": {"iou": 0.5666, "dice": 0.6419}, "asset": {"iou": 0.8573, "dice": 0.9155}},
        ),
        Architecture(
            name="unet",
            display_name="U-Net",
            description="U-Net (ResNet50 encoder)",
            builder="segserve.models.unet:build_unet",
            published={"corrosion": {"iou": 0.5254, "dice": 0.5900}, "asset": {"iou": 0.7007, "dice": 0.7993}},
        ),
        Architecture(
            name="unet-vgg16",
            display_name="U-Net (VGG16)",
            description="U-Net (VGG16 encoder, batch-normalised decoder 256/128/64/32, skips at strides 1-8)",
            builder="segserve.models.unet:build_unet",
            encoder="vgg16",
            builder_kwargs={"decoder_filters": (256, 128, 64, 32)},
            default=True,
            in_ensemble=True,
        ),
        Architecture(
            name="deeplabv3plus-vgg16",
            display_name="DeepLabV3+ (VGG16)",
            description="DeepLabV3+ (VGG16 encoder, ASPP on block5_conv3 at output stride 16)",
            builder="segserve.models.deeplabv3plus:build_deeplabv3plus",
            encoder="vgg16",
            in_ensemble=True,
        ),
    )
}
NAMES: tuple[str, ...] = tuple(ARCHITECTURES)
SHIPPED: tuple[str, ...] = tuple(a.name for a in ARCHITECTURES.values() if a.shipped)
DEFAULT: str = next(a.name for a in ARCHITECTURES.values() if a.default)
ENSEMBLE_MEMBERS: tuple[str, ...] = tuple(a.name for a in ARCHITECTURES.values() if a.in_ensemble)
# The name requests use for the mean of several served models' probabilities, reported with their agreement.
ENSEMBLE = "ensemble"


def method_name(name: str) -> str:
    """The Python identifier of a model name: the model service's batchable method for it (``unet-vgg16`` ->
    ``unet_vgg16``)."""
    return name.replace("-", "_")


def get(name: str) -> Architecture:
    """The architecture called ``name``; ValueError naming the known ones otherwise."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(NAMES)}")
    return ARCHITECTURES[name]
