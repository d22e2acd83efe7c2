"""Small custom layers; registered so that saved ``.keras`` files load once segserve.models is imported."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="segserve")
class BroadcastLike(keras.layers.Layer):
    """Tile a (N, 1, 1, C) tensor over the spatial size of a reference (N, H, W, *) tensor.

    This is the bilinear upsampling of DeepLab's image-pooling branch (upsampling a 1x1 map is a
    broadcast), written so that the model accepts any input size divisible by 16.
    """

    def call(self, inputs):
        pooled, reference = inputs
        return pooled * ops.ones_like(reference[..., :1])

    def compute_output_shape(self, input_shapes):
        pooled, reference = input_shapes
        return (reference[0], reference[1], reference[2], pooled[-1])
