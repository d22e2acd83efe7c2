"""DeepLabV3+ on a ResNet50 or VGG16 encoder at output stride 16."""

from __future__ import annotations

import keras
from keras import layers

from segserve.classes import NUM_CLASSES
from segserve.models.blocks import conv_bn_relu
from segserve.models.encoder import build_encoder
from segserve.models.layers import BroadcastLike


def build_deeplabv3plus(
    num_classes: int = NUM_CLASSES,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    encoder_weights: str | None = None,
    aspp_filters: int = 256,
    aspp_rates: tuple[int, ...] = (6, 12, 18),
    decoder_low_level_filters: int = 48,
    decoder_filters: int = 256,
    decoder_dropout: float = 0.1,
    encoder: str = "resnet50",
    name: str = "deeplabv3plus",
) -> keras.Model:
    """DeepLabV3+ (Chen et al., 2018): ASPP on the encoder's stride-16 features (ResNet50's conv4, VGG16's
    ``block5_conv3``), a decoder fusing its stride-4 features (``block3_conv3`` on VGG16), bilinear
    upsampling, softmax over ``num_classes``.

    Input: float32 (N, H, W, 3) from :func:`segserve.imaging.normalize`, H and W divisible by 16. Keras'
    bilinear UpSampling2D cannot retrace for unknown H and W, so each compiled function (fit, predict) must
    see one spatial size: training runs on crops, serving and validation at the model's input size.
    Output: float32 (N, H, W, num_classes) class probabilities.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    features = build_encoder(inputs, encoder, encoder_weights)
    x = features[16]

    # Atrous spatial pyramid pooling: a 1x1 branch, separable atrous branches, image pooling.
    branches = [conv_bn_relu(x, aspp_filters, 1, name="aspp_1x1")]
    for rate in aspp_rates:
        branches.append(conv_bn_relu(x, aspp_filters, 3, dilation_rate=rate, separable=True, name=f"aspp_rate{rate}"))
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(x)
    pooled = conv_bn_relu(pooled, aspp_filters, 1, name="aspp_pool_proj")
    branches.append(BroadcastLike(name="aspp_pool_broadcast")([pooled, x]))
    x = layers.Concatenate(name="aspp_concat")(branches)
    x = conv_bn_relu(x, aspp_filters, 1, name="aspp_proj")
    x = layers.Dropout(decoder_dropout, name="aspp_dropout")(x)

    # Decoder: upsample to stride 4 and fuse the projected low-level features.
    x = layers.UpSampling2D(4, interpolation="bilinear", name="decoder_up4")(x)
    low = conv_bn_relu(features[4], decoder_low_level_filters, 1, name="decoder_low_level")
    x = layers.Concatenate(name="decoder_concat")([x, low])
    x = conv_bn_relu(x, decoder_filters, 3, separable=True, name="decoder_block1")
    x = conv_bn_relu(x, decoder_filters, 3, separable=True, name="decoder_block2")

    x = layers.Conv2D(num_classes, 1, name="head_logits")(x)
    x = layers.UpSampling2D(4, interpolation="bilinear", name="head_up4")(x)
    outputs = layers.Softmax(name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)
