"""Running a model: input normalisation and the forward pass, the one place serving and training do it.

The model service, ``training.evaluate``, the training loop's validation and the reports all call
``Predictor.probabilities``, and turn probabilities into answers with ``segserve.inference``, so what
training measures is what serving answers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segserve import imaging


class Predictor:
    """A Keras segmentation model behind a small interface.

    flip: horizontal-flip test-time augmentation, the mean of the probabilities of the image and of its
        mirror image (twice the model time).
    """

    def __init__(self, model: Any, flip: bool = False) -> None:
        self.model = model
        self.flip = flip

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """RGB uint8 (N, S, S, 3) at the model's input size -> class probabilities float32 (N, S, S, C)."""
        x = imaging.normalize(images)
        probs = np.asarray(self.model.predict_on_batch(x), dtype=np.float32)
        if self.flip:
            mirrored = np.asarray(self.model.predict_on_batch(np.ascontiguousarray(x[:, :, ::-1])), dtype=np.float32)
            probs = (probs + mirrored[:, :, ::-1]) / 2
        return probs

    def probabilities_batched(self, images: np.ndarray, batch_size: int = 4) -> np.ndarray:
        """``probabilities`` over many images, ``batch_size`` at a time."""
        return np.concatenate(
            [self.probabilities(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        )
