"""Calibrate the review flag on a split: do the confidence signals track the error, and which thresholds
flag the photos that carry the error of the corroded share.

    python -m training.calibrate --data ../shared/datasets/corrosion-pipes --split val [--write]

For each model and for the ensemble (the mean of its models' probabilities: ``ensemble_members``), per photo
and through the
functions the server calls (``training.prediction.answer``: the model service's prediction and wire format,
``pipeline.postprocess``): the softmax confidence (``review.confidence_of``), the photo's quality
(``review.image_quality``), the agreement of the ensemble members' masks (``review.agreement``), the photo's mean IoU
(as the Evaluate RPC computes it) and the absolute error of its corrosion_asset_ratio. It reports Spearman rank
correlations between the signals and the errors, and chooses:

- ``confidence_threshold`` and ``max_low_confidence_fraction`` per model: among the candidates (thresholds
  CONFIDENCE_THRESHOLDS; fraction limits halfway between consecutive photos' low-confidence fractions, or 1 to
  flag none), the pair that maximises (share of the split's ratio error carried by the flagged photos) minus
  (share of photos flagged), with at most MAX_FLAGGED_SHARE of the photos flagged; ties go to the fewest
  photos flagged, then the lowest threshold. A photo is flagged when ``review.review_reasons`` gives any
  reason, so NO_ASSET (the default ``min_asset_fraction``) and the image checks count too.
- ``min_agreement`` for the ensemble by the same rule, halfway between consecutive photos' agreements (or 0),
  with the ensemble's confidence limits fixed to the default model's (``architectures.DEFAULT``), since the server takes
  the ensemble's thresholds from the default model.
- ``min_side``, ``min_brightness``, ``min_sharpness``: half the lowest value on the split, so that no photo of
  it is flagged, but at least QUALITY_FLOORS (a 32x32 photo is IMAGE_TOO_SMALL, a blank uniform photo, whose
  sharpness is 0, IMAGE_TOO_BLURRED).

The models are the releases in ``--release-dir`` (default models/), or with ``--store`` the versions in the
BentoML store: the served version of each model, or the one ``--version NAME:SPEC`` names (``candidate``: the
newest candidate, e.g. a fine-tune waiting for promotion; ``served``; a version). ``--models`` calibrates only
some of them (one model alone gets no ensemble numbers, and keeps its recorded ``min_agreement``).

``--write`` records each model's thresholds under ``review`` (the fields of
``segserve.review.ReviewThresholds``, the ensemble's ``min_agreement`` in both, and a ``calibration`` entry
with the numbers), adds ``ratio_mae``, ``grade_exact`` and ``grade_within_one`` of this run to ``val_metrics``
and the ensemble's metrics as ``ensemble_val_metrics`` (what ListModels shows for it): into the store versions
calibrated (``--store``), or into ``<release-dir>/<name>.json`` and every store version holding that release
(``segserve.store.release_version``), so that the server serves the new thresholds from its next start with no
re-import. The tables go to ``--out`` (default: ``docs/results/review_calibration.md`` for the shipped
releases in models/, else ``<release-dir>/review_calibration.md``, or ``runs/calibrate/review_calibration.md``
with ``--store``).

Among the numbers: ``large_error``, how many photos have a corroded share wrong by more than LARGE_ERROR
(10 points) and how many of them the flag catches, with the thresholds chosen on all photos and held out.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from segserve import architectures, imaging, metrics, review, store
from segserve.errors import ModelNotInStore, SegServeError
from segserve.predictor import Prediction, pack, unpack
from segserve.review import ReviewThresholds
from training.data import DatasetError, Sample, load_samples, split_of
from training.formatting import display_name, percent
from training.metadata import require_held_out, val_metrics
from training.prediction import ENSEMBLE, Option, answer, answer_masks, run_option
from training.sources import from_store, load_releases

DEFAULT_OUT = Path("docs/results/review_calibration.md")
CONFIDENCE_THRESHOLDS = tuple(round(0.4 + 0.05 * i, 2) for i in range(12))  # 0.40 .. 0.95
MAX_FLAGGED_SHARE = 0.5
QUALITY_FLOORS = {"min_side": 33, "min_brightness": 10.0, "min_sharpness": 1.0}
DEFAULT_MODEL = architectures.DEFAULT
ENSEMBLE_OWN = "ensemble_own_limits"
LARGE_ERROR = 0.10  # a corroded share wrong by more than 10 percentage points is a bad answer
STORE_OUT = Path("runs/calibrate/review_calibration.md")


@dataclass(frozen=True)
class Photo:
    """What calibration knows of one photo's answer by one option (a model or the ensemble)."""

    id: str
    mean_confidence: float
    low_fraction: dict[float, float]  # confidence threshold -> share of pixels below it
    confidences: dict[float, review.Confidence]
    pixels: np.ndarray  # predicted class pixel counts
    quality: review.ImageQuality
    agreement: float  # of the two models' masks (the same for every option)
    mean_iou: float
    ratio_error: float


def rank(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (Pearson's of the ranks); None when either side is constant or too short."""
    rx, ry = rank(x), rank(y)
    if len(rx) < 3 or rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def photos(samples: Sequence[Sample], predictions: Sequence[Prediction], agreements: Sequence[float]) -> list[Photo]:
    """The calibration signals of one option's answers, computed as the server computes them: the answer
    (``training.prediction.answer``: wire format and ``pipeline.postprocess``), its confidence
    (``review.confidence_of`` of the model-size prediction, at every candidate threshold) and the photo's
    quality (``review.image_quality`` of the model input, with the photo's own shorter side)."""
    out = []
    for sample, prediction, agree in zip(samples, predictions, agreements, strict=True):
        seg = answer(sample, prediction)
        wire = unpack(pack(prediction))
        confidences = {t: review.confidence_of(wire.mask[0], wire.top[0], t) for t in CONFIDENCE_THRESHOLDS}
        truth_ratio = metrics.corrosion_asset_ratio(metrics.class_pixels(sample.truth))
        out.append(
            Photo(
                id=sample.id,
                mean_confidence=confidences[CONFIDENCE_THRESHOLDS[0]].mean,
                low_fraction={t: c.low_fraction for t, c in confidences.items()},
                confidences=confidences,
                pixels=seg.pixels,
                quality=review.image_quality(sample.model_input, min_side=min(sample.image.shape[:2])),
                agreement=float(agree),
                mean_iou=metrics.nanmean(metrics.iou(metrics.confusion_matrix(sample.truth, seg.mask))),
                ratio_error=abs(seg.corrosion_asset_ratio - truth_ratio),
            )
        )
    return out


def quality_thresholds(qualities: Sequence[review.ImageQuality]) -> dict[str, float]:
    """Half the lowest value on the split (no photo of it flagged), at least QUALITY_FLOORS."""
    return {
        "min_side": max(QUALITY_FLOORS["min_side"], min(q.min_side for q in qualities) // 2),
        "min_brightness": round(max(QUALITY_FLOORS["min_brightness"], min(q.brightness for q in qualities) / 2), 2),
        "min_sharpness": round(max(QUALITY_FLOORS["min_sharpness"], min(q.sharpness for q in qualities) / 2), 2),
    }


def flags(items: Sequence[Photo], thresholds: ReviewThresholds, ensemble: bool) -> np.ndarray:
    """Whether ``review.review_reasons`` flags each photo (the ensemble's also on the models' agreement)."""
    out = []
    for photo in items:
        if thresholds.confidence_threshold not in photo.confidences:
            raise ValueError(f"confidence threshold {thresholds.confidence_threshold} is not a candidate")
        conf = photo.confidences[thresholds.confidence_threshold]
        agree = photo.agreement if ensemble else None
        out.append(bool(review.review_reasons(conf, photo.quality, photo.pixels, thresholds, agree)))
    return np.array(out, dtype=bool)


def score(items: Sequence[Photo], flagged: np.ndarray) -> float:
    """Share of the ratio error carried by the flagged photos minus the share of photos flagged."""
    errors = np.array([p.ratio_error for p in items])
    total = errors.sum()
    carried = errors[flagged].sum() / total if total > 0 else 0.0
    return float(carried - flagged.mean())


def _cuts(values: Sequence[float], never: float) -> list[float]:
    """Limits halfway between consecutive distinct values, from the one that flags nothing (``never``) down."""
    distinct = np.unique(np.asarray(values, dtype=np.float64))
    halfway = [float((a + b) / 2) for a, b in zip(distinct[:-1], distinct[1:], strict=True)]
    return [never, *halfway]


def choose_confidence(items: Sequence[Photo], base: ReviewThresholds) -> ReviewThresholds:
    """confidence_threshold and max_low_confidence_fraction by the module's rule."""
    best: tuple[tuple[float, int, float], ReviewThresholds] | None = None
    for t in CONFIDENCE_THRESHOLDS:
        cuts = sorted(_cuts([p.low_fraction[t] for p in items], 1.0), reverse=True)
        for cut in cuts:
            candidate = replace(base, confidence_threshold=t, max_low_confidence_fraction=round(cut, 4))
            flagged = flags(items, candidate, ensemble=False)
            if flagged.mean() > MAX_FLAGGED_SHARE:
                continue
            key = (score(items, flagged), -int(flagged.sum()), -t)
            if best is None or key > best[0]:
                best = (key, candidate)
    assert best is not None  # the cut of 1.0 flags no photo on confidence
    return best[1]


def choose_agreement(items: Sequence[Photo], base: ReviewThresholds) -> ReviewThresholds:
    """min_agreement for the ensemble by the module's rule, the other thresholds fixed."""
    best: tuple[tuple[float, int], ReviewThresholds] | None = None
    for cut in sorted(_cuts([p.agreement for p in items], 0.0)):
        candidate = replace(base, min_agreement=round(cut, 4))
        flagged = flags(items, candidate, ensemble=True)
        if flagged.mean() > MAX_FLAGGED_SHARE:
            continue
        key = (score(items, flagged), -int(flagged.sum()))
        if best is None or key > best[0]:
            best = (key, candidate)
    if best is None:  # the confidence limits alone flag over half the photos: do not add to them
        return replace(base, min_agreement=0.0)
    return best[1]


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _split_errors(errors: np.ndarray, flagged: np.ndarray) -> dict[str, Any]:
    return {
        "flagged": int(flagged.sum()),
        "unflagged": int((~flagged).sum()),
        "flagged_ratio_mae": _mean(errors[flagged]),
        "unflagged_ratio_mae": _mean(errors[~flagged]),
        "flagged_share_of_ratio_error": float(errors[flagged].sum() / errors.sum()) if errors.sum() > 0 else None,
    }


def _large_error(errors: np.ndarray, flagged: np.ndarray, held_out: np.ndarray | None) -> dict[str, Any]:
    """How many photos have a corroded share wrong by more than LARGE_ERROR, and how many of them are flagged
    (by the thresholds chosen on all photos, and held out)."""
    large = errors > LARGE_ERROR
    return {
        "threshold": LARGE_ERROR,
        "photos": int(large.sum()),
        "flagged": int((large & flagged).sum()),
        "held_out_flagged": None if held_out is None else int((large & held_out).sum()),
    }


def summary(
    items: Sequence[Photo],
    thresholds: ReviewThresholds,
    ensemble: bool,
    split: str,
    held_out: np.ndarray | None = None,
) -> dict[str, Any]:
    """The calibration numbers of one answer under its thresholds (and, given the leave-one-out flags, theirs)."""
    flagged = flags(items, thresholds, ensemble)
    errors = np.array([p.ratio_error for p in items])
    ious = [p.mean_iou for p in items]
    t = thresholds.confidence_threshold
    confident = [1 - p.low_fraction[t] for p in items]
    agreements = [p.agreement for p in items]
    means = [p.mean_confidence for p in items]
    return {
        "split": split,
        "n_images": len(items),
        "spearman_mean_confidence_vs_mean_iou": spearman(means, ious),
        "spearman_mean_confidence_vs_ratio_error": spearman(means, errors),
        "spearman_confident_fraction_vs_mean_iou": spearman(confident, ious),
        "spearman_confident_fraction_vs_ratio_error": spearman(confident, errors),
        "spearman_agreement_vs_mean_iou": spearman(agreements, ious),
        "spearman_agreement_vs_ratio_error": spearman(agreements, errors),
        **_split_errors(errors, flagged),
        "large_error": _large_error(errors, flagged, held_out),
        "ratio_mae": float(errors.mean()),
        "flagged_ids": [p.id for p, f in zip(items, flagged, strict=True) if f],
        "held_out": None if held_out is None else _split_errors(errors, held_out),
        "thresholds": thresholds.as_dict(),
        "rule": (
            f"maximise share of ratio error in flagged photos minus share of photos flagged, at most "
            f"{MAX_FLAGGED_SHARE:.0%} flagged"
        ),
    }


def held_out_flags(
    items: Sequence[Photo], choose: Callable[[list[int]], ReviewThresholds], ensemble: bool
) -> np.ndarray:
    """Leave-one-out: whether each photo is flagged by the thresholds chosen on the other photos, an estimate
    of how the rule does on photos it has not seen."""
    out = []
    for i in range(len(items)):
        thresholds = choose([k for k in range(len(items)) if k != i])
        out.append(flags([items[i]], thresholds, ensemble)[0])
    return np.array(out, dtype=bool)


def calibrate_split(
    models: dict[str, Any], samples: Sequence[Sample], split: str
) -> tuple[dict[str, ReviewThresholds], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Thresholds and calibration numbers per answer (each model; with two models ENSEMBLE, under the default
    model's confidence limits as served, and ENSEMBLE_OWN, with limits of its own), and the val metrics of the
    answers (``metrics.table``): the inspector's numbers (``metrics.RATIO_KEYS``) per model, and with two models
    the ensemble's full ``val_metrics`` (``training.metadata.val_metrics``) under ENSEMBLE."""
    names = list(models)
    members = ensemble_members(names)
    predictions = {n: [run_option(Option((n,), False), models, s.model_input[None]) for s in samples] for n in names}
    if members:
        both = [run_option(Option(members, False), models, s.model_input[None]) for s in samples]
        agreements = [answer(s, p).models_agreement for s, p in zip(samples, both, strict=True)]
    else:
        agreements = [1.0] * len(samples)
    items = {n: photos(samples, predictions[n], agreements) for n in names}
    quality = quality_thresholds([photo.quality for photo in items[names[0]]])
    base = replace(ReviewThresholds(), **quality)

    def pick(key: str, keep: list[int]) -> list[Photo]:
        return [items[key][k] for k in keep]

    choosers: dict[str, Callable[[list[int]], ReviewThresholds]] = {
        n: (lambda keep, n=n: choose_confidence(pick(n, keep), base)) for n in names
    }
    if members:
        items[ENSEMBLE] = items[ENSEMBLE_OWN] = photos(samples, both, agreements)
        default = DEFAULT_MODEL if DEFAULT_MODEL in members else members[0]
        choosers[ENSEMBLE] = lambda keep: choose_agreement(pick(ENSEMBLE, keep), choosers[default](keep))
        choosers[ENSEMBLE_OWN] = lambda keep: choose_agreement(
            pick(ENSEMBLE, keep), choose_confidence(pick(ENSEMBLE, keep), base)
        )
    everything = list(range(len(samples)))
    chosen = {k: choose(everything) for k, choose in choosers.items()}
    if ENSEMBLE in chosen:
        for n in members:
            chosen[n] = replace(chosen[n], min_agreement=chosen[ENSEMBLE].min_agreement)
    numbers = {}
    for key, choose in choosers.items():
        ensemble = key in (ENSEMBLE, ENSEMBLE_OWN)
        held_out = held_out_flags(items[key], choose, ensemble)
        numbers[key] = summary(items[key], chosen[key], ensemble, split, held_out)
        errors = np.array([photo.ratio_error for photo in items[key]])
        numbers[key]["with_default_thresholds"] = _split_errors(errors, flags(items[key], base, ensemble))
    truths = [s.truth for s in samples]
    val: dict[str, dict[str, Any]] = {}
    for n in names:
        scores = metrics.table(truths, answer_masks(predictions[n], samples))
        val[n] = {k: scores[k] for k in metrics.RATIO_KEYS}
    if members:
        val[ENSEMBLE] = {**val_metrics(metrics.table(truths, answer_masks(both, samples)), split), "members": members}
    return chosen, numbers, val


def ensemble_members(names: Sequence[str]) -> tuple[str, ...]:
    """The models calibrated as the ensemble: the served ensemble's (``architectures.ENSEMBLE_MEMBERS``) when all
    of them are among ``names``, else all of ``names``; none for a single model."""
    if len(architectures.ENSEMBLE_MEMBERS) > 1 and set(architectures.ENSEMBLE_MEMBERS) <= set(names):
        return tuple(n for n in names if n in architectures.ENSEMBLE_MEMBERS)
    return tuple(names) if len(names) > 1 else ()


def recorded(
    name: str,
    meta: dict[str, Any],
    chosen: dict[str, ReviewThresholds],
    numbers: dict[str, dict[str, Any]],
    ratio: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """The metadata keys calibration records for model ``name`` over its metadata ``meta``: ``review`` (the
    thresholds and the ``calibration`` numbers), ``val_metrics`` with the ratio agreement, and with two models
    ``ensemble_val_metrics`` when it is one of the ensemble's members. Calibrated alone or outside the ensemble, a
    model keeps its recorded ``min_agreement``."""
    member = name in ratio.get(ENSEMBLE, {}).get("members", ())
    calibration = dict(numbers[name])
    for key in (ENSEMBLE, ENSEMBLE_OWN):
        if key in numbers and member:
            calibration[key] = numbers[key]
    thresholds = chosen[name].as_dict()
    if not member:
        thresholds["min_agreement"] = ReviewThresholds.from_metadata(meta).min_agreement
    changes = {
        "review": {**thresholds, "calibration": calibration},
        "val_metrics": {**(meta.get("val_metrics") or {}), **ratio[name]},
    }
    if member:  # what ListModels shows for the ensemble (read from the default model's metadata)
        changes["ensemble_val_metrics"] = ratio[ENSEMBLE]
    return store.without_none(changes)  # an undefined number is left out: a store version's metadata holds no None


def write_metadata(
    release_dir: Path,
    chosen: dict[str, ReviewThresholds],
    numbers: dict[str, dict[str, Any]],
    ratio: dict[str, dict[str, float]],
) -> list[Path]:
    """Record calibration (:func:`recorded`) in each model's release metadata, keeping every other key; returns
    the files written."""
    written = []
    for name in (n for n in ratio if n != ENSEMBLE):
        _, path = store.release_paths(name, release_dir)
        meta = json.loads(path.read_text())
        meta.update(recorded(name, meta, chosen, numbers, ratio))
        path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


def write_store(
    refs: dict[str, Any],
    chosen: dict[str, ReviewThresholds],
    numbers: dict[str, dict[str, Any]],
    ratio: dict[str, dict[str, float]],
) -> list[str]:
    """Record calibration (:func:`recorded`) in the metadata of store versions (model name -> BentoML model);
    returns their tags."""
    written = []
    for name, ref in refs.items():
        store.update_metadata(ref, recorded(name, dict(ref.info.metadata), chosen, numbers, ratio))
        written.append(str(ref.tag))
    return written


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:+.{digits}f}"


def _label(key: str) -> str:
    return {ENSEMBLE: "ensemble (as served)", ENSEMBLE_OWN: "ensemble (own limits)"}.get(key, display_name(key))


def render(
    chosen: dict[str, ReviewThresholds],
    numbers: dict[str, dict[str, Any]],
    ratio: dict,
    command: str,
    models: str = "the shipped releases",
) -> str:
    """The calibration report (markdown); ``models`` says which models were calibrated."""
    any_numbers = next(iter(numbers.values()))
    lines = [
        "# Review flag calibration",
        "",
        f"{any_numbers['n_images']} photos of the {any_numbers['split']} split, {models}, through",
        "serving's path. Per photo: mean softmax confidence (mean top probability), the confident fraction",
        "(1 - share of pixels whose top probability is below the chosen `confidence_threshold`), the agreement of",
        "the two models' masks (mean IoU), the photo's mean IoU against the truth (as the Evaluate RPC computes",
        "it) and the absolute error of its corroded share (corrosion_asset_ratio).",
        "",
        "```bash",
        command,
        "```",
        "",
        "## Do the signals track the error? (Spearman rank correlation)",
        "",
        "A useful signal correlates positively with the photo's mean IoU and negatively with its ratio error.",
        "",
        "| answer | confidence vs IoU | confidence vs ratio error | confident fraction vs IoU "
        "| confident fraction vs ratio error | agreement vs IoU | agreement vs ratio error |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, n in numbers.items():
        lines.append(
            f"| {_label(key)} | {_num(n['spearman_mean_confidence_vs_mean_iou'])} "
            f"| {_num(n['spearman_mean_confidence_vs_ratio_error'])} "
            f"| {_num(n['spearman_confident_fraction_vs_mean_iou'])} "
            f"| {_num(n['spearman_confident_fraction_vs_ratio_error'])} "
            f"| {_num(n['spearman_agreement_vs_mean_iou'])} | {_num(n['spearman_agreement_vs_ratio_error'])} |"
        )
    lines += [
        "",
        "## Thresholds chosen",
        "",
        f"Rule: {any_numbers['rule']}; ties go to the fewest photos flagged, then the lowest confidence threshold.",
        f"The ensemble as served keeps the default model's ({display_name(DEFAULT_MODEL)}) confidence limits, as the "
        "server does, and",
        'only `min_agreement` is chosen for it (it is recorded in both models\' metadata); "ensemble (own limits)"',
        "shows what limits of its own would do (recorded for information only). Image checks: half the lowest",
        "value on the split, at least "
        + ", ".join(f"`{k}` {v}" for k, v in QUALITY_FLOORS.items())
        + " (a 32x32 photo is too small, a blank one too blurred).",
        "With this few photos the limits are coarse: read them as a starting point to revisit with more data.",
        "",
        "| answer | confidence_threshold | max_low_confidence_fraction | min_agreement | min_asset_fraction "
        "| min_side | min_brightness | min_sharpness |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, t in chosen.items():
        agreement = f"{t.min_agreement:.4f}" if key in (ENSEMBLE, ENSEMBLE_OWN) else f"({t.min_agreement:.4f})"
        lines.append(
            f"| {_label(key)} | {t.confidence_threshold:.2f} | {t.max_low_confidence_fraction:.4f} | {agreement} "
            f"| {t.min_asset_fraction} | {t.min_side} | {t.min_brightness} | {t.min_sharpness} |"
        )
    lines += [
        "",
        "## Flagged against unflagged photos",
        "",
        'Ratio MAE: mean absolute error of the corroded share, in percentage points. "chosen on all": the',
        'thresholds above, chosen on these very photos (optimistic); "held out": leave-one-out, each photo',
        "flagged or not by thresholds chosen on the other photos, an estimate for photos the rule has not seen.",
        "",
        "| answer | photos flagged / unflagged | ratio MAE flagged / unflagged | share of the ratio error in flagged "
        "| held out: flagged / unflagged | held out: ratio MAE flagged / unflagged | held out: share of error "
        "| ratio MAE all | flagged photos (chosen on all) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, n in numbers.items():
        h = n.get("held_out") or {}
        lines.append(
            f"| {_label(key)} | {n['flagged']} / {n['unflagged']} "
            f"| {percent(n['flagged_ratio_mae'])} / {percent(n['unflagged_ratio_mae'])} "
            f"| {percent(n['flagged_share_of_ratio_error'])}% "
            f"| {h.get('flagged', 'n/a')} / {h.get('unflagged', 'n/a')} "
            f"| {percent(h.get('flagged_ratio_mae'))} / {percent(h.get('unflagged_ratio_mae'))} "
            f"| {percent(h.get('flagged_share_of_ratio_error'))}% | {percent(n['ratio_mae'])} "
            f"| {', '.join(n['flagged_ids'])} |"
        )
    lines += [
        "",
        f"Bad answers caught: photos whose corroded share is wrong by more than {100 * LARGE_ERROR:.0f} percentage",
        "points, and how many of them the flag catches (chosen on all photos; held out).",
        "",
        "| answer | bad answers | flagged (chosen on all) | flagged (held out) |",
        "|---|---:|---:|---:|",
    ]
    for key, n in numbers.items():
        large = n.get("large_error") or {}
        lines.append(
            f"| {_label(key)} | {large.get('photos', 'n/a')} | {large.get('flagged', 'n/a')} "
            f"| {large.get('held_out_flagged', 'n/a')} |"
        )
    defaults = ReviewThresholds()
    lines += [
        "",
        f"For comparison, the code's default limits (`confidence_threshold` {defaults.confidence_threshold}, "
        f"`max_low_confidence_fraction` {defaults.max_low_confidence_fraction}, `min_agreement` "
        f"{defaults.min_agreement}) with the image checks above:",
        "",
        "| answer | photos flagged / unflagged | ratio MAE flagged / unflagged | share of the ratio error in flagged |",
        "|---|---:|---:|---:|",
    ]
    for key, n in numbers.items():
        d = n.get("with_default_thresholds")
        if d:
            lines.append(
                f"| {_label(key)} | {d['flagged']} / {d['unflagged']} "
                f"| {percent(d['flagged_ratio_mae'])} / {percent(d['unflagged_ratio_mae'])} "
                f"| {percent(d['flagged_share_of_ratio_error'])}% |"
            )
    if ratio:
        lines += [
            "",
            "## What an inspector reads (plain answers)",
            "",
            "| model | ratio MAE (points) | rust grade exact | rust grade within one |",
            "|---|---:|---:|---:|",
        ]
        for name, r in ratio.items():
            lines.append(
                f"| {_label(name)} | {percent(r['ratio_mae'])} | {percent(r['grade_exact'])}% "
                f"| {percent(r['grade_within_one'])}% |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The calibrate options."""
    p = argparse.ArgumentParser(prog="python -m training.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset folder (original/, ground_truth/, optional split files)")
    p.add_argument("--split", default="val", help="train, val or test (default val)")
    p.add_argument("--release-dir", default=str(store.DEFAULT_RELEASE_DIR), help="folder of the release files")
    p.add_argument("--store", action="store_true", help="calibrate versions in the BentoML store, not release files")
    p.add_argument(
        "--version",
        action="append",
        default=[],
        metavar="NAME:SPEC",
        help="with --store: the version of a model to calibrate: candidate (its newest candidate), served, or a "
        "version (default: the served one); repeatable",
    )
    p.add_argument(
        "--models",
        default=",".join(architectures.SHIPPED),
        help="the models to calibrate, comma separated (default: the shipped ones; two or more: the ensemble too)",
    )
    p.add_argument(
        "--write", action="store_true", help="record the thresholds in the models' metadata and write the report"
    )
    p.add_argument(
        "--out",
        default=None,
        help=f"markdown report written with --write (default {DEFAULT_OUT} for models/, "
        f"<release-dir>/review_calibration.md for another release folder, {STORE_OUT} with --store)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random split when the dataset has no split files")
    p.add_argument("--limit", type=int, default=0, help="only the first N photos of the split")
    args = p.parse_args(argv)
    args.models = [m.strip().removeprefix("corrosion-") for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in architectures.NAMES]
    if unknown or not args.models:
        p.error(f"--models: unknown {', '.join(unknown) or 'nothing'}; the models are {', '.join(architectures.NAMES)}")
    args.versions = {}
    for spec in args.version:
        name, _, version = spec.partition(":")
        name = name.removeprefix("corrosion-")
        if name not in args.models or not version:
            p.error(f"--version {spec}: give NAME:SPEC for one of --models ({', '.join(args.models)})")
        args.versions[name] = version
    if args.versions and not args.store:
        p.error("--version needs --store")
    return args


def default_out(args: argparse.Namespace) -> Path:
    """Where the report goes without --out."""
    if args.store:
        return STORE_OUT
    if Path(args.release_dir).resolve() == store.DEFAULT_RELEASE_DIR.resolve():
        return DEFAULT_OUT
    return Path(args.release_dir) / DEFAULT_OUT.name


def load_models(args: argparse.Namespace) -> tuple[dict[str, Any], int, dict[str, Any], str]:
    """The models to calibrate ({name: keras model}), their input size, their store versions ({name: BentoML
    model}, empty for releases) and what they are, for the report. SegServeError when the sizes differ, or when
    a model was trained on photos of the split (:func:`training.metadata.require_held_out`)."""
    ids = [p.id for p in split_of(args.data, args.split, args.seed, args.limit)]
    if not args.store:
        models, metas = load_releases(args.release_dir, args.models)
        require_held_out(metas, args.data, ids, args.split)
        where = "the shipped releases" if default_out(args) == DEFAULT_OUT else f"the releases in {args.release_dir}"
        return models, _input_size(metas), {}, where
    models, metas, refs = {}, {}, {}
    for name in args.models:
        refs[name] = store.resolve(name, args.versions.get(name, store.SERVED))
        loaded = from_store(name, str(refs[name].tag.version))
        models[name], metas[name] = loaded.model, loaded.metadata
    require_held_out(metas, args.data, ids, args.split)
    return models, _input_size(metas), refs, "the store versions " + ", ".join(str(r.tag) for r in refs.values())


def _input_size(metas: dict[str, dict[str, Any]]) -> int:
    sizes = {int(m.get("input_size") or imaging.MODEL_INPUT_SIZE) for m in metas.values()}
    if len(sizes) != 1:
        raise SegServeError(f"the models have different input sizes {sorted(sizes)}; calibrate them one at a time")
    return sizes.pop()


def calibrate(args: argparse.Namespace, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Calibrate on the split, print the report, and with --write record it; returns the numbers."""
    models, size, refs, where = load_models(args)
    samples = load_samples(args.data, args.split, size, args.seed, args.limit)
    print(f"calibrating {where} on {len(samples)} {args.split} photos of {args.data}", flush=True)
    chosen, numbers, ratio = calibrate_split(models, samples, args.split)
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python -m training.calibrate " + shlex.join(argv)
    text = render(chosen, numbers, ratio, command, where)
    print(text, flush=True)
    if args.write:
        if refs:
            targets = refs
        else:
            for path in write_metadata(Path(args.release_dir), chosen, numbers, ratio):
                print(f"review thresholds and ratio metrics written to {path}", flush=True)
            targets = releases_in_store(args.release_dir, args.models)
        for tag in write_store(targets, chosen, numbers, ratio):
            print(f"review thresholds and ratio metrics written into {tag}", flush=True)
        out = Path(args.out) if args.out else default_out(args)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"report written to {out}", flush=True)
    return {"thresholds": {k: t.as_dict() for k, t in chosen.items()}, "calibration": numbers, "ratio": ratio}


def releases_in_store(release_dir: str | Path, names: Sequence[str]) -> dict[str, Any]:
    """The store version holding each release, for the models whose release is in the store."""
    found = {}
    for name in names:
        try:
            ref = store.release_version(name, release_dir)
        except ModelNotInStore:  # no weights file beside the metadata: nothing of it can be in the store
            continue
        if ref is not None:
            found[name] = ref
    return found


def main(argv: list[str] | None = None) -> None:
    """Run ``python -m training.calibrate`` with ``argv`` (default: the command line)."""
    try:
        calibrate(parse_args(argv), argv)
    except (SegServeError, DatasetError) as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
