"""training.compute: TensorFlow's threads, the precision choice, and models rebuilt in float32."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from segserve.errors import SegServeError
from training import compute


class FakeThreading:
    """tf.config.threading's calls, recorded."""

    def __init__(self, intra: int) -> None:
        self.intra, self.calls = intra, []

    def get_intra_op_parallelism_threads(self) -> int:
        return self.intra

    def set_intra_op_parallelism_threads(self, n: int) -> None:
        self.calls.append(("intra", n))

    def set_inter_op_parallelism_threads(self, n: int) -> None:
        self.calls.append(("inter", n))


@pytest.mark.parametrize(
    ("threads", "current", "calls"),
    [
        (0, 0, []),  # TensorFlow's default: not even imported
        (2, 0, [("intra", 2), ("inter", 1)]),
        (2, 2, []),  # already so (a fine-tune sets them before the training loop does)
        (1, 4, [("intra", 1), ("inter", 1)]),
    ],
)
def test_set_threads(monkeypatch, threads, current, calls):
    threading = FakeThreading(current)
    monkeypatch.setitem(sys.modules, "tensorflow", SimpleNamespace(config=SimpleNamespace(threading=threading)))
    compute.set_threads(threads)
    assert threading.calls == calls


def test_auto_precision_is_bfloat16_only_where_the_cpu_has_it(tmp_path, monkeypatch):
    with_bf16, without = tmp_path / "bf16", tmp_path / "plain"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f\n")
    assert compute.cpu_has_bf16(with_bf16) and not compute.cpu_has_bf16(without)
    assert not compute.cpu_has_bf16(tmp_path / "missing")
    monkeypatch.setattr(compute, "cpu_has_bf16", lambda: False)
    assert compute.resolve_precision("auto") == "float32"
    monkeypatch.setattr(compute, "cpu_has_bf16", lambda: True)
    assert compute.resolve_precision("auto") == "mixed_bfloat16"
    assert compute.resolve_precision("float32") == "float32"
    assert compute.resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="unknown precision 'float16'"):
        compute.resolve_precision("float16")


def test_float32_policy_builds_in_float32_and_restores_the_policy(tf_few_threads):
    import keras

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        with compute.float32_policy():
            inside = keras.layers.Dense(2)
        outside = keras.layers.Dense(2)
        assert inside.compute_dtype == "float32" and outside.compute_dtype == "bfloat16"
        assert keras.mixed_precision.dtype_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def test_as_float32_rebuilds_a_bfloat16_model_with_its_weights(tf_few_threads):
    import keras

    from segserve.models import build_model
    from tests.servers import tiny_model

    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(3)
        trained = build_model("unet-vgg16")  # the lightest encoder: this test builds the architecture twice
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    served = compute.as_float32("unet-vgg16", trained)
    assert {layer.compute_dtype for layer in trained.layers} >= {"bfloat16"}
    assert {layer.compute_dtype for layer in served.layers} == {"float32"}
    for a, b in zip(trained.get_weights(), served.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(SegServeError, match="the start model is not a unet-vgg16 built with"):
        compute.as_float32("unet-vgg16", tiny_model("unet-vgg16"))


def test_the_training_step_is_compiled_everywhere_but_on_tensorflow():
    assert compute.compiles_step("tensorflow") is False
    assert compute.compiles_step("jax") is True
    assert compute.compiles_step("torch") is True


def test_a_resumed_checkpoint_compiles_as_this_backend_does(tf_few_threads, tmp_path):
    import keras

    from tests.servers import tiny_model
    from training.loop import load_checkpoint

    model = tiny_model("unet")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=True)  # as JAX would save it
    model.save(tmp_path / "last.keras")
    assert keras.saving.load_model(tmp_path / "last.keras").jit_compile is True
    assert load_checkpoint(tmp_path / "last.keras").jit_compile is False  # TensorFlow here: XLA stays off
