"""Past float32: int8 quantisation of a served model with ONNX Runtime, judged by the parity bar.

    BENTOML_HOME=... python -m benchmarks.precision --model deeplabv3plus --data ../shared/datasets/corrosion-pipes

Static QDQ quantisation (per-channel int8 weights, uint8 activations) calibrated on train photos, with two
calibrations (min-max and percentile); each is compared with the float32 model on the val photos (pixels whose
class agrees, and mean IoU against the truth) and timed beside it at batch 1. The bar a precision must pass to
be adopted: masks agree on at least 99.5% of the pixels and mean IoU moves by at most 0.2 points.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from segserve import imaging, metrics, predictor, store
from segserve.architectures import DEFAULT
from training.data import load_split

MIN_AGREEMENT = 0.995
MAX_MIOU_DELTA = 0.002


def masks(run: predictor.Predictor, images: np.ndarray) -> np.ndarray:
    """The predicted class-id masks of ``images``, eight at a time."""
    return np.concatenate([run.predict(images[k : k + 8]).mask for k in range(0, len(images), 8)])


def throughput(run: predictor.Predictor, image: np.ndarray, seconds: float) -> float:
    """Calls per second on ``image`` over ``seconds``, after one warm-up call."""
    run.predict(image)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run.predict(image)
        done += 1
    return done / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    parser = argparse.ArgumentParser(prog="python -m benchmarks.precision", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", default=DEFAULT, help=f"the model to quantise (default {DEFAULT}, the served default)"
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--calibration-photos", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args(argv)

    model_dir, _ = store.served_model(args.model)
    fp32_path = model_dir / predictor.ONNX_FILE
    val, truth = load_split(args.data, "val")
    calibration, _ = load_split(args.data, "train", args.calibration_photos)

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self.feed = iter(
                [{predictor.ONNX_INPUT: imaging.normalize(calibration[i : i + 1])} for i in range(len(calibration))]
            )

        def get_next(self):
            return next(self.feed, None)

    fp32 = predictor.Predictor(predictor.OnnxModel(fp32_path))
    reference = masks(fp32, val)
    rows = [("float32", 1.0, metrics.report(metrics.confusion_matrix(truth, reference)).mean_iou, fp32)]
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        for label, method in (
            ("int8, min-max", CalibrationMethod.MinMax),
            ("int8, percentile", CalibrationMethod.Percentile),
        ):
            out = Path(tmp) / f"{method.name}.onnx"
            quantize_static(
                str(prepared),
                str(out),
                Photos(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                calibrate_method=method,
            )
            run = predictor.Predictor(predictor.OnnxModel(out))
            predicted = masks(run, val)
            miou = metrics.report(metrics.confusion_matrix(truth, predicted)).mean_iou
            rows.append((label, float((predicted == reference).mean()), miou, run))
        one = val[:1]
        print(f"`python -m benchmarks.precision {' '.join(argv if argv is not None else sys.argv[1:])}`\n")
        print("| precision | pixels agreeing with float32 | val mean IoU | images/s at batch 1 | passes the bar |")
        print("|---|---:|---:|---:|---|")
        base_miou = rows[0][2]
        for label, agreement, miou, run in rows:
            passes = agreement >= MIN_AGREEMENT and abs(miou - base_miou) <= MAX_MIOU_DELTA
            print(
                f"| {label} | {100 * agreement:.2f}% | {100 * miou:.2f} | {throughput(run, one, args.seconds):.2f} "
                f"| {'yes' if passes else 'no'} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
