"""Serving's path for training's measurements: what training, evaluation and the reports score is what the
server answers.

:func:`predict_masks` is the one way training turns a model and images into class masks: the model service's
``Predictor.predict`` (optionally with horizontal-flip test-time augmentation), then ``imaging.upsample_mask``
to each image's own size, as serving's postprocessing (``pipeline.postprocess``) does. For photos at their own
size (``data.Sample``), :func:`run_option` makes the model service's prediction for one model or the ensemble
and :func:`answer` the server's answer (the wire format, then ``pipeline.postprocess``). An option may also run
a model at other test-time input sizes than its own (one size, or the mean over several: multi-scale
inference); the probabilities are brought back to the model's own size before the argmax, so the answer is
made the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from segserve import imaging, pipeline
from segserve.predictor import Prediction, Predictor, from_probabilities, pack, predict_ensemble, unpack
from segserve.review import ReviewThresholds
from training.data import Sample
from training.formatting import display_name

# The name serving gives the mean of several models' probabilities.
ENSEMBLE = "ensemble"


def predict_masks(model: Any, images: np.ndarray, batch_size: int = 4, flip: bool = False) -> np.ndarray:
    """Class masks uint8 (N, H, W) for RGB uint8 images (N, H, W, 3) already at the model's input size.

    Serving's path: ``Predictor.predict``, the model service's call (``flip``: horizontal-flip test-time
    augmentation), then ``imaging.upsample_mask`` to each image's own size, as ``pipeline.postprocess`` does.
    """
    predictor = Predictor(model, flip=flip)
    masks = []
    for i in range(0, len(images), batch_size):
        batch = images[i : i + batch_size]
        prediction = predictor.predict(batch)
        masks += [imaging.upsample_mask(m, x.shape[1], x.shape[0]) for m, x in zip(prediction.mask, batch, strict=True)]
    return np.stack(masks)


@dataclass(frozen=True)
class Option:
    """A way to answer: the mean of the probabilities of ``models`` (one or more), each with or without flip.

    sizes: test-time input sizes for a single model, the mean of its probabilities at each (empty: the model's
        own input size only, as served).
    """

    models: tuple[str, ...]
    flip: bool
    sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.sizes and len(self.models) > 1:
            raise ValueError("test-time sizes apply to a single model, not to the ensemble")

    @property
    def name(self) -> str:
        base = ENSEMBLE if len(self.models) > 1 else self.models[0]
        return base + ("+flip" if self.flip else "") + ("@" + "+".join(map(str, self.sizes)) if self.sizes else "")

    @property
    def label(self) -> str:
        base = "ensemble" if len(self.models) > 1 else display_name(self.models[0])
        sizes = f" at {'+'.join(map(str, self.sizes))} px" if self.sizes else ""
        return base + (" + flip TTA" if self.flip else "") + sizes

    @property
    def passes(self) -> int:
        """Forward passes per photo."""
        return len(self.models) * (2 if self.flip else 1) * max(1, len(self.sizes))


class PerShape:
    """A Keras model whose ``predict_on_batch`` is traced once for each input shape.

    Keras' own ``predict_on_batch`` relaxes its trace to a free height and width when a second size comes,
    which some layers (the ResNet50 DeepLabV3+'s upsampling) cannot trace; test-time sizes need this instead.
    """

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        self.model = model
        self._forward = tf.function(lambda x: model(x, training=False), reduce_retracing=False)

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities for normalised float32 input (N, S, S, 3)."""
        return np.asarray(self._forward(np.ascontiguousarray(x, dtype=np.float32)))


def resize_probabilities(probs: np.ndarray, size: int) -> np.ndarray:
    """Class probabilities (h, w, C) float32 -> (size, size, C), bilinear (a convex mix, so they still sum to 1)."""
    if probs.shape[:2] == (size, size):
        return probs
    return cv2.resize(probs, (size, size), interpolation=cv2.INTER_LINEAR)


def multiscale_probabilities(predictor: Predictor, photo: np.ndarray, sizes: Sequence[int], size: int) -> np.ndarray:
    """The mean of a model's probabilities for ``photo`` (RGB uint8 at its own size) resized to each of ``sizes``
    as serving resizes it, each brought to ``size`` (the model's own input size) first: (size, size, C)."""
    each = [predictor.probabilities(imaging.resize_image(photo, s)[None])[0] for s in sizes]
    return np.mean([resize_probabilities(p, size) for p in each], axis=0)


def run_option(
    option: Option, models: dict[str, Any], images: np.ndarray, photos: Sequence[np.ndarray] | None = None
) -> Prediction:
    """The model service's prediction for model inputs (N, S, S, 3) uint8: ``Predictor.predict`` of one model,
    or ``predict_ensemble`` of several (the mean of their probabilities, each member's class ids kept).

    With ``option.sizes``, each of ``photos`` (the N photos at their own size; default ``images``) is run at
    those sizes instead and the mean probabilities, at S, decide (:func:`multiscale_probabilities`); the model
    must then take any input size (a Keras model wrapped in :class:`PerShape`).
    """
    predictors = [Predictor(models[name], flip=option.flip) for name in option.models]
    if option.sizes:
        size = images.shape[1]
        sources = images if photos is None else photos
        probs = [multiscale_probabilities(predictors[0], photo, option.sizes, size) for photo in sources]
        return from_probabilities(np.stack(probs))
    return predictors[0].predict(images) if len(predictors) == 1 else predict_ensemble(predictors, images)


def answer(
    sample: Sample, prediction: Prediction, thresholds: ReviewThresholds | None = None, name: str = ""
) -> pipeline.Segmentation:
    """What the server answers for a photo given the model service's prediction (a batch of one): the wire
    format (``pack``/``unpack``), then ``pipeline.postprocess``, the very functions the server calls."""
    prepared = pipeline.Prepared(image=sample.image, model_input=sample.model_input)
    served = pipeline.ServedModel(name, "", len(sample.model_input), thresholds or ReviewThresholds())
    return pipeline.postprocess(prepared, unpack(pack(prediction)), served, 0.0)


def answer_masks(predictions: Sequence[Prediction], samples: Sequence[Sample]) -> list[np.ndarray]:
    """The answers' class masks, at each photo's own size."""
    return [answer(s, p).mask for p, s in zip(predictions, samples, strict=True)]
