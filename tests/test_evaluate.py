"""training.evaluate: its options and the summary it prints (the evaluation itself runs in test_training.py)."""

from __future__ import annotations

import numpy as np

from segserve import metrics
from training import evaluate
from training.report import metrics_json


def test_defaults():
    args = evaluate.parse_args(["--model", "unet", "--data", "d"])
    assert (args.split, args.out, args.release, args.input_size, args.seed, args.limit) == ("val", None, False, 0, 0, 0)


def test_print_summary(capsys):
    truth = np.array([[[1, 1], [2, 2]]], np.uint8)  # no corrosion anywhere: its IoU is undefined
    pred = np.array([[[1, 2], [2, 2]]], np.uint8)
    evaluate.print_summary(metrics_json(metrics.table(truth, pred)))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "class            IoU    Dice   prec.  recall   per-image IoU  Dice"
    assert lines[1] == "corrosion       n/a     n/a     n/a     n/a           100.00100.00"
    assert lines[2] == "asset          50.00   66.67  100.00   50.00           50.00 66.67"
    assert lines[5] == "pixel accuracy 75.00% over 1 images"
    assert lines[6] == (
        "corroded share of the asset: mean absolute error 0.00 points; rust grade exact 100.00%, within one 100.00%"
    )
