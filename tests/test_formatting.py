"""training.formatting: percentages, durations, report names and JSON-safe values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from training.formatting import display_name, duration, percent, plain


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        ((0.1234,), {}, "12.34"),
        ((0.1234, "%"), {}, "12.34%"),
        ((1.0,), {}, "100.00"),
        ((0.0,), {}, "0.00"),
        ((0.123456,), {}, "12.35"),
        ((None,), {}, "n/a"),
        ((math.nan, "%"), {}, "n/a"),
        ((0.05,), {"width": 6}, "  5.00"),
        ((None,), {"width": 6, "missing": "  n/a "}, "  n/a "),
        ((np.float64(0.5),), {}, "50.00"),
    ],
)
def test_percent(args, kwargs, expected):
    assert percent(*args, **kwargs) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, "0 s"), (119.4, "119 s"), (120, "2.0 min"), (750, "12.5 min"), (7199, "120.0 min"), (9000, "2.50 h")],
)
def test_duration(seconds, expected):
    assert duration(seconds) == expected


def test_display_names_come_from_the_architecture_table():
    assert display_name("deeplabv3plus") == "DeepLabV3+"
    assert display_name("unet") == "U-Net"
    assert display_name("ensemble") == "ensemble"


def test_plain_is_strict_json():
    value = {"a": np.float32(0.5), "b": [np.int64(3), math.nan], "c": (np.array([1.0, np.nan]),), "d": "x"}
    assert plain(value) == {"a": 0.5, "b": [3, None], "c": [[1.0, None]], "d": "x"}
    json.dumps(plain(value), allow_nan=False)
    assert type(plain(np.int64(3))) is int and type(plain(np.float64(0.25))) is float
