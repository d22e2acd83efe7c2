"""Convolution blocks shared by the decoders."""

from __future__ import annotations

import keras
from keras import layers


def conv_bn_relu(
    x: keras.KerasTensor,
    filters: int,
    kernel_size: int = 3,
    dilation_rate: int = 1,
    separable: bool = False,
    name: str = "",
) -> keras.KerasTensor:
    """Conv (or depthwise-separable conv) -> BatchNorm -> ReLU, 'same' padding, no bias."""
    conv = layers.SeparableConv2D if separable else layers.Conv2D
    x = conv(
        filters,
        kernel_size,
        padding="same",
        dilation_rate=dilation_rate,
        use_bias=False,
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)
