"""training.data: pairing photos with masks by number, splits, decoding and resizing with segserve.imaging, and
the loaders built on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segserve.classes import ASSET, BACKGROUND, CORROSION
from training.data import (
    DatasetError,
    Pair,
    find_pairs,
    load_arrays,
    load_samples,
    load_split,
    pairs_by_id,
    read_pair,
    split_of,
    split_pairs,
)

# --- pairing ----------------------------------------------------------------------------------------------


def test_pairs_by_number(make_dataset):
    data = make_dataset(n=3)
    pairs = find_pairs(data.root)
    assert [p.id for p in pairs] == ["001", "002", "003"]
    for p in pairs:
        assert p.image == data.image_path(p.id)
        assert p.mask == data.mask_path(p.id)


def test_pairs_are_in_numeric_order(make_dataset):
    data = make_dataset(numbers=[10, 2, 100])
    assert [p.id for p in find_pairs(data.root)] == ["002", "010", "100"]


def test_pairs_by_number_not_by_name(tmp_path, write_rgb, make_mask):
    mask = make_mask(4, 4)
    write_rgb(tmp_path / "original" / "photo 7.jpg", np.zeros((4, 4, 3), np.uint8))
    write_rgb(tmp_path / "ground_truth" / "label_7.png", mask)
    (tmp_path / "original" / "notes.txt").write_text("not an image, ignored")
    assert find_pairs(tmp_path) == [
        Pair("7", tmp_path / "original" / "photo 7.jpg", tmp_path / "ground_truth" / "label_7.png")
    ]


@pytest.mark.parametrize("extra", ["original/ORI_004.png", "ground_truth/GT_004.png"])
def test_unpaired_file_is_named(make_dataset, write_rgb, extra):
    data = make_dataset(n=3)
    write_rgb(data.root / extra, np.zeros((12, 16, 3), np.uint8))
    with pytest.raises(DatasetError, match="1 unpaired") as info:
        find_pairs(data.root)
    assert str(data.root / extra) in str(info.value)


def test_same_number_twice_is_an_error(make_dataset, write_rgb):
    data = make_dataset(n=2)
    write_rgb(data.root / "original" / "ORI_002.jpg", np.zeros((12, 16, 3), np.uint8))
    with pytest.raises(DatasetError, match="same number 002"):
        find_pairs(data.root)


def test_name_without_number_is_an_error(make_dataset, write_rgb):
    data = make_dataset(n=1)
    write_rgb(data.root / "original" / "cover.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetError, match="cover.png has no number"):
        find_pairs(data.root)


def test_missing_folder(tmp_path):
    (tmp_path / "original").mkdir()
    with pytest.raises(DatasetError, match="missing folder .*ground_truth"):
        find_pairs(tmp_path)


def test_empty_dataset(tmp_path):
    (tmp_path / "original").mkdir()
    (tmp_path / "ground_truth").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        find_pairs(tmp_path)


# --- decoding ----------------------------------------------------------------------------------------------


def test_load_arrays_at_the_written_size(make_dataset):
    data = make_dataset(n=2, size=(16, 16))
    images, masks = load_arrays(find_pairs(data.root), size=16)
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8
    assert masks.shape == (2, 16, 16) and masks.dtype == np.uint8
    for i, id_ in enumerate(data.ids):
        np.testing.assert_array_equal(images[i], data.images[id_])  # RGB order survives the BGR file
        np.testing.assert_array_equal(masks[i], data.masks[id_])


def test_load_arrays_single_channel_masks(make_dataset):
    data = make_dataset(n=2, size=(8, 8), mask_style="ids")
    _, masks = load_arrays(find_pairs(data.root), size=8)
    np.testing.assert_array_equal(masks, np.stack([data.masks[i] for i in data.ids]))


def test_load_arrays_resizes_masks_with_nearest(tmp_path, write_rgb, make_image):
    # Corrosion and background stripes only: a linear resize would invent asset (1) between 0 and 2.
    mask = np.zeros((4, 6), np.uint8)
    mask[:, 1::2] = BACKGROUND
    write_rgb(tmp_path / "original" / "ORI_1.png", make_image(mask))
    write_rgb(tmp_path / "ground_truth" / "GT_1.png", np.array([[255, 0, 0], [0, 255, 0]], np.uint8)[mask // 2])
    images, masks = load_arrays(find_pairs(tmp_path), size=32)
    assert images.shape == (1, 32, 32, 3)
    assert masks.shape == (1, 32, 32)
    assert set(np.unique(masks)) == {CORROSION, BACKGROUND}


def test_load_arrays_upscale_by_two_repeats_pixels(tmp_path, write_rgb, make_image):
    mask = np.array([[0, 1, 2, 0], [2, 2, 1, 1], [0, 0, 0, 2], [1, 2, 1, 0]], np.uint8)
    write_rgb(tmp_path / "original" / "ORI_1.png", make_image(mask))
    write_rgb(tmp_path / "ground_truth" / "GT_1.png", mask)  # single-channel ids
    _, masks = load_arrays(find_pairs(tmp_path), size=8)
    np.testing.assert_array_equal(masks[0], np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1))


def test_stray_colours_and_black(tmp_path, write_rgb):
    rgb = np.array(
        [
            [[250, 5, 5], [0, 0, 0], [5, 250, 5]],  # near red, black, near green
            [[10, 10, 240], [255, 0, 0], [12, 3, 8]],  # near blue, red, near black
            [[0, 0, 255], [0, 255, 0], [200, 30, 30]],  # blue, green, near red
        ],
        np.uint8,
    )
    write_rgb(tmp_path / "original" / "ORI_1.png", np.zeros((3, 3, 3), np.uint8))
    write_rgb(tmp_path / "ground_truth" / "GT_1.png", rgb)
    _, masks = load_arrays(find_pairs(tmp_path), size=3)
    expected = [
        [CORROSION, BACKGROUND, BACKGROUND],
        [ASSET, CORROSION, BACKGROUND],
        [ASSET, BACKGROUND, CORROSION],
    ]
    np.testing.assert_array_equal(masks[0], expected)


@pytest.mark.parametrize("which", ["image", "mask"])
def test_unreadable_file_is_named(make_dataset, which):
    data = make_dataset(n=3)
    bad = data.image_path("002") if which == "image" else data.mask_path("002")
    bad.write_bytes(b"definitely not a PNG")
    with pytest.raises(DatasetError, match="1 unusable") as info:
        load_arrays(find_pairs(data.root), size=16)
    assert str(bad) in str(info.value)


def test_mask_in_wrong_colours_is_named(make_dataset, write_rgb):
    data = make_dataset(n=2)
    write_rgb(data.mask_path("001"), np.full((12, 16, 3), 128, np.uint8))  # gray: no class colour
    with pytest.raises(DatasetError, match="far from every class colour") as info:
        load_arrays(find_pairs(data.root), size=16)
    assert str(data.mask_path("001")) in str(info.value)


def test_size_mismatch_names_both_files(make_dataset, write_rgb, make_mask):
    data = make_dataset(n=2, size=(12, 16))
    write_rgb(data.mask_path("002"), make_mask(12, 10))
    with pytest.raises(DatasetError) as info:
        load_arrays(find_pairs(data.root), size=16)
    message = str(info.value)
    assert f"{data.image_path('002')} is 16x12 but {data.mask_path('002')} is 10x12" in message
    assert message.startswith("1 unusable")


def test_every_problem_is_reported(make_dataset):
    data = make_dataset(n=3)
    data.image_path("001").write_bytes(b"junk")
    data.mask_path("003").write_bytes(b"")
    with pytest.raises(DatasetError, match="2 unusable") as info:
        load_arrays(find_pairs(data.root), size=16)
    assert str(data.image_path("001")) in str(info.value)
    assert str(data.mask_path("003")) in str(info.value)


# --- splits --------------------------------------------------------------------------------------------------


def fake_pairs(n: int) -> list[Pair]:
    return [Pair(f"{k:03d}", Path(f"ORI_{k:03d}.png"), Path(f"GT_{k:03d}.png")) for k in range(1, n + 1)]


def test_split_files_are_used_in_order(make_dataset):
    data = make_dataset(n=5, size=(4, 4), splits={"train": ["004", "001", "005"], "val": ["003"], "test": ["002"]})
    splits = split_pairs(find_pairs(data.root), data.root)
    assert {k: [p.id for p in v] for k, v in splits.items()} == {
        "train": ["004", "001", "005"],
        "val": ["003"],
        "test": ["002"],
    }


def test_split_files_without_test(make_dataset):
    data = make_dataset(n=3, size=(4, 4), splits={"train": ["001", "002"], "val": ["003"]})
    splits = split_pairs(find_pairs(data.root), data.root)
    assert set(splits) == {"train", "val"}
    assert [p.id for p in splits["val"]] == ["003"]


def test_split_file_blank_lines_are_ignored(tmp_path):
    (tmp_path / "train.txt").write_text("001\n\n  002  \n")
    (tmp_path / "val.txt").write_text("003\n")
    splits = split_pairs(fake_pairs(3), tmp_path)
    assert [p.id for p in splits["train"]] == ["001", "002"]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_split_file_with_unknown_id(tmp_path, split):
    files = {"train": "001\n002\n", "val": "003\n", "test": "004\n"}
    files[split] += "042\n"
    for name, text in files.items():
        (tmp_path / f"{name}.txt").write_text(text)
    with pytest.raises(DatasetError, match=f"{split}.txt names ids with no image/mask pair: 042"):
        split_pairs(fake_pairs(4), tmp_path)


@pytest.mark.parametrize(
    ("n", "n_train", "n_val", "n_test"),
    [
        (2, 1, 1, 0),
        (3, 1, 1, 1),
        (10, 8, 1, 1),
        (15, 11, 2, 2),  # round(1.5) == 2
        (20, 16, 2, 2),
        (25, 21, 2, 2),  # round(2.5) == 2 (banker's rounding)
        (100, 80, 10, 10),
    ],
)
def test_seeded_split_sizes_disjoint_and_complete(tmp_path, n, n_train, n_val, n_test):
    pairs = fake_pairs(n)
    splits = split_pairs(pairs, tmp_path, seed=0)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [n_train, n_val, n_test]
    ids = [p.id for k in ("train", "val", "test") for p in splits[k]]
    assert sorted(ids) == [p.id for p in pairs]  # disjoint and covering all


def test_seeded_split_is_deterministic(tmp_path):
    pairs = fake_pairs(30)
    first = split_pairs(pairs, tmp_path, seed=5)
    assert split_pairs(pairs, tmp_path, seed=5) == first
    assert split_pairs(pairs, tmp_path, seed=6) != first


def test_only_train_txt_falls_back_to_seeded_split(tmp_path):
    (tmp_path / "train.txt").write_text("001\n")
    splits = split_pairs(fake_pairs(10), tmp_path, seed=0)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [8, 1, 1]


def test_split_of_picks_a_named_split(make_dataset):
    data = make_dataset(n=5, size=(4, 4), splits={"train": ["004", "001", "005"], "val": ["003", "002"]})
    assert [p.id for p in split_of(data.root, "val")] == ["003", "002"]
    assert [p.id for p in split_of(data.root, "train", limit=2)] == ["004", "001"]
    with pytest.raises(DatasetError, match="has no test split; it has train, val"):
        split_of(data.root, "test")


def test_pairs_by_id_keep_the_order_and_name_the_missing(make_dataset):
    data = make_dataset(n=3, size=(4, 4))
    assert [p.id for p in pairs_by_id(data.root, ["003", "001"])] == ["003", "001"]
    with pytest.raises(DatasetError, match="val ids of the run missing from .*: 007, 009"):
        pairs_by_id(data.root, ["001", "007", "009"], "val ids of the run")


# --- the loaders ---------------------------------------------------------------------------------------------


def test_read_pair_keeps_the_own_size(make_dataset):
    data = make_dataset(n=1, size=(12, 16))
    image, mask = read_pair(find_pairs(data.root)[0])
    np.testing.assert_array_equal(image, data.images["001"])
    np.testing.assert_array_equal(mask, data.masks["001"])


def test_read_pair_names_the_file_at_fault(make_dataset, write_rgb, make_mask):
    data = make_dataset(n=1, size=(12, 16))
    pair = find_pairs(data.root)[0]
    write_rgb(pair.mask, make_mask(12, 10))
    with pytest.raises(DatasetError, match="is 16x12 but .*GT_001.png is 10x12"):
        read_pair(pair)
    pair.image.write_bytes(b"junk")
    with pytest.raises(DatasetError, match="ORI_001.png: "):
        read_pair(pair)


def test_load_split_is_the_split_at_the_model_size(make_dataset):
    """As loadtests and benchmarks call it: ``load_split(folder, split)`` and ``load_split(folder, split, limit)``."""
    data = make_dataset(n=4, size=(8, 8), splits={"train": ["001", "002", "003"], "val": ["004"]})
    images, masks = load_split(data.root, "val")
    assert images.shape == (1, 256, 256, 3) and masks.shape == (1, 256, 256)
    images, masks = load_split(data.root, "train", 2, size=8)
    np.testing.assert_array_equal(images, np.stack([data.images["001"], data.images["002"]]))
    np.testing.assert_array_equal(masks, np.stack([data.masks["001"], data.masks["002"]]))


def test_load_samples_keep_the_photo_and_add_the_model_input(make_dataset):
    data = make_dataset(n=3, size=(12, 16), splits={"train": ["001"], "val": ["003", "002"]})
    samples = load_samples(data.root, "val", 8)
    assert [s.id for s in samples] == ["003", "002"]
    for sample in samples:
        np.testing.assert_array_equal(sample.image, data.images[sample.id])
        np.testing.assert_array_equal(sample.truth, data.masks[sample.id])
        assert sample.model_input.shape == (8, 8, 3)
    assert [s.id for s in load_samples(data.root, "val", 8, limit=1)] == ["003"]
