"""How training's work is computed: TensorFlow's threads, the precision (float32 or mixed bfloat16), and whether
the training step is compiled with XLA.

Models are built and evaluated in float32 whatever the training precision: :func:`float32_policy` and
:func:`as_float32` give the model the server loads and runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from segserve.engines import BF16_CPU_FLAGS, cpu_flags
from segserve.errors import SegServeError

PRECISIONS = ("auto", "float32", "mixed_bfloat16")


def set_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads and one inter-op thread (0: TensorFlow's default, all cores).

    Call it before TensorFlow runs anything; calling it again with the same count changes nothing.
    """
    if not threads:
        return
    import tensorflow as tf

    if tf.config.threading.get_intra_op_parallelism_threads() != threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)


def compiles_step(backend: str) -> bool:
    """Whether to compile the training step with XLA on Keras' ``backend``.

    Not on TensorFlow (the backend on these CPUs): XLA is slower there and fails to compile with bfloat16. On JAX
    (for example a GPU machine without TensorFlow) it is what makes a step fast: uncompiled, JAX runs the step
    op by op.
    """
    return backend != "tensorflow"


def cpu_has_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU has bfloat16 instructions (avx512_bf16 or amx_bf16 among its /proc/cpuinfo flags)."""
    return bool(cpu_flags(cpuinfo) & set(BF16_CPU_FLAGS))


def resolve_precision(choice: str) -> str:
    """``auto | float32 | mixed_bfloat16`` -> the Keras dtype policy to train under."""
    if choice == "auto":
        return "mixed_bfloat16" if cpu_has_bf16() else "float32"
    if choice not in PRECISIONS:
        raise ValueError(f"unknown precision {choice!r}; choose auto, float32 or mixed_bfloat16")
    return choice


@contextlib.contextmanager
def float32_policy() -> Iterator[None]:
    """Build layers in float32 whatever the global Keras dtype policy is, and restore it after."""
    import keras

    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def as_float32(name: str, model: Any, builder_kwargs: dict[str, Any] | None = None) -> Any:
    """The same architecture rebuilt in float32 with ``model``'s weights: what the server loads and runs.

    A model trained under ``mixed_bfloat16`` computes in bfloat16 when saved as it is; its variables are
    float32 already, so copying them loses nothing.
    """
    from segserve.models import build_model

    with float32_policy():
        fresh = build_model(name, **(builder_kwargs or {}))
    try:
        fresh.set_weights(model.get_weights())
    except ValueError as exc:
        raise SegServeError(f"the start model is not a {name} built with {builder_kwargs or {}}: {exc}") from exc
    return fresh
