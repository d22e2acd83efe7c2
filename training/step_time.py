"""Measure the training-step cost per image at several crop sizes, side by side in one run.

    python -m training.step_time --model deeplabv3plus --sizes 128,256 --batch-size 8 --steps 3

Random inputs (the cost does not depend on the pixels); the first step of each size, which traces the
graph, is not timed. Prints a markdown table with each size's cost relative to the first.
"""

from __future__ import annotations

import argparse
import time

from segserve import architectures


def main() -> None:
    """Time the steps and print the table."""
    parser = argparse.ArgumentParser(prog="python -m training.step_time", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=architectures.DEFAULT, choices=list(architectures.NAMES))
    parser.add_argument("--sizes", default="128,256", help="comma-separated crop sides, divisible by 16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per size")
    args = parser.parse_args()

    import keras
    import numpy as np

    from segserve.models import build_model
    from training.losses import ce_dice_loss

    rng = np.random.default_rng(0)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        model = build_model(args.model)  # a fresh model per size: one traced shape per compiled function
        model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=ce_dice_loss)
        x = rng.normal(size=(args.batch_size, size, size, 3)).astype("float32")
        y = rng.integers(0, 3, size=(args.batch_size, size, size)).astype("int32")
        model.train_on_batch(x, y)
        started = time.perf_counter()
        for _ in range(args.steps):
            model.train_on_batch(x, y)
        rows.append((size, (time.perf_counter() - started) / (args.steps * args.batch_size)))
    print(f"{args.model}, batch {args.batch_size}, {args.steps} timed steps per size\n")
    print("| crop | ms per image | relative |\n|---:|---:|---:|")
    for size, seconds in rows:
        print(f"| {size} | {1000 * seconds:.0f} | {seconds / rows[0][1]:.2f}x |")


if __name__ == "__main__":
    main()
