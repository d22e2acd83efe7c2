"""Train a segmentation model on a dataset folder, resumably, selecting the best epoch on val mean IoU.

    python -m training.train --model deeplabv3plus --data ../shared/datasets/corrosion-pipes

Writes runs/<model>/ : checkpoints/last.keras (every epoch, with optimizer state), best.keras,
state.json, history.csv, config.json, and at the end the full report (see training.report).
Run again with --resume to continue an interrupted run where its last checkpoint left it.
--init-from starts from a trained model's weights instead of a new one (training.finetune wraps it with
fine-tuning defaults, the comparison with the start model and the import); --precision mixed_bfloat16 trains
under Keras' mixed precision (XLA stays off on TensorFlow: on this CPU it is slower and fails with bfloat16).
"""

from __future__ import annotations

from training.loop import parse_args, run


def main(argv: list[str] | None = None) -> None:
    """Run ``python -m training.train`` with ``argv`` (default: the command line)."""
    run(parse_args(argv))


if __name__ == "__main__":
    main()
