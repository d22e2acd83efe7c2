"""Training losses: cross-entropy, and cross-entropy plus soft Dice. ``LOSSES`` names them for the CLIs."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="segserve")
def ce_dice_loss(y_true, y_pred):
    """Sparse categorical cross-entropy + (1 - mean soft Dice over classes).

    y_true: int class ids (N, H, W); y_pred: probabilities (N, H, W, C). Dice is computed over the whole
    batch per class, then averaged over classes, so a class missing from one image cannot blow it up.
    """
    num_classes = ops.shape(y_pred)[-1]
    y_true = ops.cast(y_true, "int32")
    ce = ops.mean(keras.losses.sparse_categorical_crossentropy(y_true, y_pred))
    onehot = ops.one_hot(y_true, num_classes, dtype=y_pred.dtype)
    axes = (0, 1, 2)
    intersection = ops.sum(onehot * y_pred, axis=axes)
    total = ops.sum(onehot, axis=axes) + ops.sum(y_pred, axis=axes)
    dice = (2.0 * intersection + 1.0) / (total + 1.0)
    return ce + 1.0 - ops.mean(dice)


@keras.saving.register_keras_serializable(package="segserve")
def ce_loss(y_true, y_pred):
    """Sparse categorical cross-entropy, averaged over pixels. y_true: int ids (N, H, W); y_pred: (N, H, W, C)."""
    return ops.mean(keras.losses.sparse_categorical_crossentropy(ops.cast(y_true, "int32"), y_pred))


LOSSES = {"ce": ce_loss, "ce_dice": ce_dice_loss}
