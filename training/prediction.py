"""Serving's path for training's measurements: what training, evaluation and the reports score is what the
server answers.

:func:`predict_masks` is the one way training turns a model and images into class masks: the model service's
``Predictor.predict`` (optionally with horizontal-flip test-time augmentation), then ``imaging.upsample_mask``
to each image's own size, as serving's postprocessing (``pipeline.postprocess``) does. For photos at their own
size (``data.Sample``), :func:`run_option` makes the model service's prediction for one model or the ensemble
and :func:`answer` the server's answer (the wire format, then ``pipeline.postprocess``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segserve import imaging, pipeline
from segserve.predictor import Prediction, Predictor, pack, predict_ensemble, unpack
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
    """A way to answer: the mean of the probabilities of ``models`` (one or more), each with or without flip."""

    models: tuple[str, ...]
    flip: bool

    @property
    def name(self) -> str:
        base = ENSEMBLE if len(self.models) > 1 else self.models[0]
        return base + ("+flip" if self.flip else "")

    @property
    def label(self) -> str:
        base = "ensemble" if len(self.models) > 1 else display_name(self.models[0])
        return base + (" + flip TTA" if self.flip else "")

    @property
    def passes(self) -> int:
        """Forward passes per photo."""
        return len(self.models) * (2 if self.flip else 1)


def run_option(option: Option, models: dict[str, Any], images: np.ndarray) -> Prediction:
    """The model service's prediction for model inputs (N, S, S, 3) uint8: ``Predictor.predict`` of one model,
    or ``predict_ensemble`` of several (the mean of their probabilities, each member's class ids kept)."""
    predictors = [Predictor(models[name], flip=option.flip) for name in option.models]
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
