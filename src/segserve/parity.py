"""Parity as a gate: an engine other than ONNX Runtime float32 serves a model only if, on labelled photos, its
masks agree with ONNX Runtime float32's on at least 99.5% of the pixels and its mean IoU against the truth is
within 0.5 points of it.

The result is recorded with the model in the store (``parity.json`` in its folder), per kind of machine
(``segserve.engines.machine_kind``: the numbers depend on the instructions that compute them), so that
precision ``auto`` uses bfloat16 only for a model that passed on that kind of machine. ``python -m
training.parity --data DATA`` (and ``make models``, for models not yet checked here) checks and records it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from segserve import metrics
from segserve.engines import machine_kind, native_bf16
from segserve.predictor import Predictor, load_predictor

PARITY_FILE = "parity.json"
MIN_AGREEMENT = 0.995
MAX_MEAN_IOU_DROP = 0.005  # 0.5 points
REFERENCE = ("onnxruntime", "f32")


def read(model_dir: str | Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The model's parity records: machine kind -> engine (``backend:precision``) -> result."""
    path = Path(model_dir) / PARITY_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def passed(model_dir: str | Path, engine: str, kind: str | None = None) -> bool | None:
    """Whether the model passed parity for ``engine`` on ``kind`` of machine (default: this one); None if it
    was never checked there."""
    result = read(model_dir).get(kind or machine_kind(), {}).get(engine)
    return None if result is None else bool(result["passed"])


def record(model_dir: str | Path, results: dict[str, dict[str, Any]], kind: str | None = None) -> Path:
    """Add ``results`` (engine -> result) for ``kind`` of machine (default: this one) to the model's record."""
    path = Path(model_dir) / PARITY_FILE
    records = read(model_dir)
    records.setdefault(kind or machine_kind(), {}).update(results)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def candidates(has_bf16: bool | None = None) -> list[tuple[str, str]]:
    """The engines worth checking on this machine: OpenVINO float32, and bfloat16 where the CPU has it."""
    engines = [("openvino", "f32")]
    if native_bf16() if has_bf16 is None else has_bf16:
        engines.append(("openvino", "bf16"))
    return engines


def masks(predictor: Predictor, images: np.ndarray, batch: int = 4) -> np.ndarray:
    """Class masks (N, S, S) of images (N, S, S, 3), a few at a time."""
    return np.concatenate([predictor.predict(images[i : i + batch]).mask for i in range(0, len(images), batch)])


def compare(reference: np.ndarray, candidate: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """The parity numbers of a candidate's class masks against the reference's, both scored on the truth
    (all (N, S, S) uint8)."""
    agreement = float(np.mean(candidate == reference))

    def mean_iou(masks: np.ndarray) -> float:
        cm = sum(metrics.confusion_matrix(t, m) for t, m in zip(truth, masks, strict=True))
        return float(metrics.report(cm).mean_iou)

    ref_iou, iou = mean_iou(reference), mean_iou(candidate)
    return {
        "agreement": agreement,
        "mean_iou": iou,
        "reference_mean_iou": ref_iou,
        "images": int(len(truth)),
        "passed": bool(agreement >= MIN_AGREEMENT and ref_iou - iou <= MAX_MEAN_IOU_DROP),
    }


def check(
    model_dir: str | Path,
    input_size: int,
    images: np.ndarray,
    truth: np.ndarray,
    engines: list[tuple[str, str]] | None = None,
    cache_dir: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the model on each engine and on the reference over ``images`` (RGB uint8 (N, S, S, 3) at the
    model's input size) and score each against the reference and ``truth`` (class ids (N, S, S))."""
    reference = masks(load_predictor(model_dir, *REFERENCE, input_size), images)
    results = {}
    for backend, precision in engines or candidates():
        predictor = load_predictor(model_dir, backend, input_size, precision=precision, cache_dir=cache_dir)
        results[f"{backend}:{precision}"] = compare(reference, masks(predictor, images), truth)
    return results
