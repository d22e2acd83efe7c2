"""Dataset loading: pair photos with masks, split, and decode them with segserve.imaging.

A dataset folder holds ``original/ORI_NNN.png`` and ``ground_truth/GT_NNN.png``, paired by NNN, and
optionally ``train.txt`` / ``val.txt`` (one NNN a line).

Every pair is decoded by :func:`read_pair`; :func:`load_arrays` brings pairs to the model's input size (the
arrays training, evaluation and the reports use), :func:`load_samples` keeps each photo at its own size beside
its model input (as a request brings it). :func:`split_of` picks a named split, :func:`pairs_by_id` the pairs a
run recorded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segserve import imaging
from segserve.errors import SegServeError

_NUMBER = re.compile(r"(\d+)")
IMAGE_DIR = "original"
MASK_DIR = "ground_truth"
_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class DatasetError(Exception):
    """The dataset folder cannot be used as it is; the message names the files at fault."""


@dataclass(frozen=True)
class Pair:
    """One photo and its ground truth."""

    id: str
    image: Path
    mask: Path


def _by_number(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"missing folder {folder}")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in _SUFFIXES:
            continue
        match = _NUMBER.search(path.stem)
        if match is None:
            raise DatasetError(f"{path} has no number in its name to pair it by")
        key = match.group(1)
        if key in found:
            raise DatasetError(f"{found[key]} and {path} have the same number {key}")
        found[key] = path
    return found


def find_pairs(data_dir: str | Path) -> list[Pair]:
    """Pair every photo with its mask by number; raise DatasetError naming any file without a partner."""
    root = Path(data_dir)
    images = _by_number(root / IMAGE_DIR)
    masks = _by_number(root / MASK_DIR)
    unpaired = sorted(str(images[k]) for k in images.keys() - masks.keys())
    unpaired += sorted(str(masks[k]) for k in masks.keys() - images.keys())
    if unpaired:
        raise DatasetError(f"{len(unpaired)} unpaired file(s): {', '.join(unpaired)}")
    if not images:
        raise DatasetError(f"no images in {root / IMAGE_DIR}")
    return [Pair(k, images[k], masks[k]) for k in sorted(images, key=int)]


def _read_ids(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def split_pairs(pairs: list[Pair], data_dir: str | Path, seed: int = 0) -> dict[str, list[Pair]]:
    """Split into train/val(/test): by ``train.txt`` and ``val.txt`` when present, else a seeded 80/10/10 split."""
    root = Path(data_dir)
    by_id = {p.id: p for p in pairs}
    if (root / "train.txt").exists() and (root / "val.txt").exists():
        splits = {}
        for name in ("train", "val", "test"):
            if not (root / f"{name}.txt").exists():
                continue
            ids = _read_ids(root / f"{name}.txt")
            missing = [i for i in ids if i not in by_id]
            if missing:
                raise DatasetError(f"{name}.txt names ids with no image/mask pair: {', '.join(missing)}")
            splits[name] = [by_id[i] for i in ids]
        return splits
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_val = max(1, round(0.1 * len(pairs)))
    n_test = max(1, round(0.1 * len(pairs))) if len(pairs) >= 3 else 0
    shuffled = [pairs[i] for i in order]
    return {
        "val": shuffled[:n_val],
        "test": shuffled[n_val : n_val + n_test],
        "train": shuffled[n_val + n_test :],
    }


def pairs_by_id(data_dir: str | Path, ids: list[str], what: str = "ids") -> list[Pair]:
    """The pairs of ``ids`` in that order (e.g. the val ids a run recorded); DatasetError names any missing."""
    by_id = {p.id: p for p in find_pairs(data_dir)}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DatasetError(f"{what} missing from {data_dir}: {', '.join(missing)}")
    return [by_id[i] for i in ids]


def split_of(data_dir: str | Path, split: str, seed: int = 0, limit: int = 0) -> list[Pair]:
    """The pairs of a named split (``limit``: only its first N); DatasetError when the dataset has none."""
    splits = split_pairs(find_pairs(data_dir), data_dir, seed)
    if split not in splits or not splits[split]:
        raise DatasetError(f"{data_dir} has no {split} split; it has {', '.join(sorted(splits))}")
    return splits[split][: limit or None]


def read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """Decode a pair at its own size: RGB uint8 (H, W, 3) and class ids uint8 (H, W).

    Raises DatasetError naming the unreadable file, or both files when the photo and mask differ in size.
    """
    try:
        image = imaging.read_image(str(pair.image))
    except (SegServeError, OSError) as exc:
        raise DatasetError(f"{pair.image}: {exc}") from exc
    try:
        mask = imaging.read_mask(str(pair.mask))
    except (SegServeError, OSError) as exc:
        raise DatasetError(f"{pair.mask}: {exc}") from exc
    if image.shape[:2] != mask.shape:
        raise DatasetError(
            f"{pair.image} is {image.shape[1]}x{image.shape[0]} but {pair.mask} is {mask.shape[1]}x{mask.shape[0]}"
        )
    return image, mask


def load_arrays(pairs: list[Pair], size: int = imaging.MODEL_INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Decode and resize pairs: images uint8 (N, size, size, 3) RGB, masks uint8 (N, size, size) class ids.

    Raises DatasetError naming every unreadable file, and every pair whose photo and mask differ in size.
    """
    images, masks, problems = [], [], []
    for pair in pairs:
        try:
            image, mask = read_pair(pair)
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        images.append(imaging.resize_image(image, size))
        masks.append(imaging.resize_mask(mask, size))
    if problems:
        raise DatasetError(f"{len(problems)} unusable file(s):\n  " + "\n  ".join(problems))
    return np.stack(images), np.stack(masks)


def load_split(
    data_dir: str | Path, split: str, limit: int = 0, *, size: int = imaging.MODEL_INPUT_SIZE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The arrays of a named split (:func:`split_of`, then :func:`load_arrays`): images and masks at ``size``."""
    return load_arrays(split_of(data_dir, split, seed, limit), size)


@dataclass(frozen=True)
class Sample:
    """One photo of a split as serving sees it: the photo and its truth at their own size, and the model input."""

    id: str
    image: np.ndarray  # RGB uint8 (H, W, 3)
    truth: np.ndarray  # class ids uint8 (H, W)
    model_input: np.ndarray  # RGB uint8 (S, S, 3)


def load_samples(data_dir: str | Path, split: str, size: int, seed: int = 0, limit: int = 0) -> list[Sample]:
    """The photos and ground truths of a named split at their own size (as a request would bring them), each
    with its model input at ``size``."""
    samples = []
    for pair in split_of(data_dir, split, seed, limit):
        image, truth = read_pair(pair)
        samples.append(Sample(pair.id, image, truth, imaging.resize_image(image, size)))
    return samples
