"""U-Net on a ResNet50 or VGG16 encoder, with the stride-16 features as its bottleneck."""

from __future__ import annotations

import keras
from keras import layers

from segserve.classes import NUM_CLASSES
from segserve.models.blocks import conv_bn_relu
from segserve.models.encoder import build_encoder


def build_unet(
    num_classes: int = NUM_CLASSES,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    encoder_weights: str | None = None,
    decoder_filters: tuple[int, ...] = (128, 64, 32, 16),
    encoder: str = "resnet50",
    name: str = "unet",
) -> keras.Model:
    """U-Net (Ronneberger et al., 2015): from the stride-16 bottleneck, four upsampling conv blocks, each
    fused with the encoder's features at stride 8, 4, 2 and 1 where it has them (ResNet50 has none at
    stride 1), back to full size; softmax.
    The default decoder widths (128, 64, 32, 16) keep the decoder's cost near the encoder's; twice as
    wide made a CPU training step on 128x128 crops about twice as slow.

    Input: float32 (N, H, W, 3) from :func:`segserve.imaging.normalize`, H and W divisible by 16. Keras'
    bilinear UpSampling2D cannot retrace for unknown H and W, so each compiled function (fit, predict) must
    see one spatial size: training runs on crops, serving and validation at the model's input size.
    Output: float32 (N, H, W, num_classes) class probabilities.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    features = build_encoder(inputs, encoder, encoder_weights)
    x = features[16]
    skips = tuple(features.get(stride) for stride in (8, 4, 2, 1))
    for i, (filters, skip) in enumerate(zip(decoder_filters, skips, strict=True), start=1):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"decoder_block{i}_up")(x)
        if skip is not None:
            x = layers.Concatenate(name=f"decoder_block{i}_concat")([x, skip])
        x = conv_bn_relu(x, filters, 3, name=f"decoder_block{i}a")
        x = conv_bn_relu(x, filters, 3, name=f"decoder_block{i}b")
    x = layers.Conv2D(num_classes, 1, name="head_logits")(x)
    outputs = layers.Softmax(name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)
