"""Check the served models' parity on this machine's engines, on labelled photos, and record it with each model.

    python -m training.parity --data ../shared/datasets/corrosion-pipes [NAME ...] [--only-unchecked]

For each served model (default: every one the settings serve), OpenVINO float32, and bfloat16 where the CPU
has it natively, run over the val photos beside ONNX Runtime float32; agreement and mean IoU decide whether the
engine passes (``segserve.parity``), and the result is recorded in the model's store folder for this kind of
machine, where ``SEGSERVE_PRECISION=auto`` reads it. ``make models`` runs it with ``--only-unchecked`` after
importing.
"""

from __future__ import annotations

import argparse
import sys

from segserve import engines
from segserve import parity as gate
from segserve.errors import ModelNotInStore, UnknownModel
from segserve.settings import get_settings
from segserve.store import openvino_cache_dir, served_model
from training.data import DatasetError, load_split


def check(names: list[str], data: str, only_unchecked: bool = False) -> int:
    """Check and record each model's parity; 1 (and a message) if one cannot be checked."""
    kind = engines.machine_kind()
    for name in names or get_settings().model_names:
        try:
            model_dir, info = served_model(name.removeprefix("corrosion-"))
            if only_unchecked and kind in gate.read(model_dir):
                print(f"corrosion-{info.name}:{info.version}: parity already recorded for {kind}")
                continue
            images, truth = load_split(data, "val", size=info.input_size)
        except (ModelNotInStore, UnknownModel, DatasetError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        results = gate.check(model_dir, info.input_size, images, truth, cache_dir=str(openvino_cache_dir()))
        gate.record(model_dir, results, kind)
        for engine, result in results.items():
            verdict = "passes" if result["passed"] else "FAILS"
            print(
                f"corrosion-{info.name}:{info.version} on {engine} ({kind}): {verdict}: {result['agreement']:.2%} of "
                f"pixels agree with onnxruntime:f32 on {result['images']} val photos, mean IoU "
                f"{100 * (result['mean_iou'] - result['reference_mean_iou']):+.2f} points"
            )
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.parity", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="models (default: every served model)")
    parser.add_argument("--data", required=True, help="dataset folder whose val photos are compared")
    parser.add_argument("--only-unchecked", action="store_true", help="skip models already checked on this machine")
    args = parser.parse_args(argv)
    sys.exit(check(args.names, args.data, args.only_unchecked))


if __name__ == "__main__":
    main()
