"""The ResNet50 encoder shared by both architectures, and the table of its feature layers."""

from __future__ import annotations

import keras

# Feature layers of Keras' ResNet50 by output stride. Both decoders read these, and nothing deeper than
# stride 16 is built, so conv5 (15M of ResNet50's 23.5M weights) never exists.
RESNET50_FEATURES = {
    2: "conv1_relu",
    4: "conv2_block3_out",
    8: "conv3_block4_out",
    16: "conv4_block6_out",
}


def resolve_encoder_weights(encoder_weights: str | None) -> str | None:
    """Map the CLI's ``imagenet | none | PATH`` to what ``keras.applications.ResNet50`` takes."""
    if encoder_weights in (None, "", "none", "None"):
        return None
    return encoder_weights


def build_encoder(inputs: keras.KerasTensor, encoder_weights: str | None = None) -> dict[int, keras.KerasTensor]:
    """Build ResNet50 on ``inputs`` and return its feature tensors keyed by output stride (2, 4, 8, 16).

    encoder_weights: None (random initialisation), "imagenet" (downloads Keras' ImageNet weights) or the
    path of a ResNet50 no-top weights file.
    """
    resnet = keras.applications.ResNet50(
        include_top=False, weights=resolve_encoder_weights(encoder_weights), input_tensor=inputs
    )
    return {stride: resnet.get_layer(name).output for stride, name in RESNET50_FEATURES.items()}
