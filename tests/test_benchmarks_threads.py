"""benchmarks.threads: the host's core count against the usable CPUs, measured side by side."""

from __future__ import annotations

import numpy as np

from benchmarks import threads


def test_the_counts_compared_are_the_hosts_cores_and_the_usable_cpus():
    assert threads.thread_counts(host=64, usable=4) == (4, 64)
    assert threads.thread_counts(host=2, usable=2) == (2,)  # no limit: one row per engine


def test_every_engine_and_count_is_timed_interleaved_and_compared_with_the_usable_count():
    calls = []

    class Run:
        def __init__(self, backend, n):
            self.key = (backend, n)

        def predict(self, image):
            calls.append(self.key)

    rows = threads.measure(lambda b, n: Run(b, n), np.zeros((1, 8, 8, 3), np.uint8), (2, 8), rounds=3)
    assert [(r.backend, r.threads) for r in rows] == [(b, n) for b in threads.BACKENDS for n in (2, 8)]
    assert all(len(r.latencies_ms) == 3 for r in rows)
    # one warm-up call each, then the engines in turn, round after round
    assert calls[4:8] == calls[8:12] == [(b, n) for b in threads.BACKENDS for n in (2, 8)]
    rows = [threads.Row("onnxruntime", 2, [10.0, 10.0, 12.0]), threads.Row("onnxruntime", 8, [30.0, 31.0, 29.0])]
    text = threads.table(rows, usable=2)
    assert "| onnxruntime f32 | 2 | 3 | 10.0 |" in text and text.endswith("| 3.00 |")


def test_a_model_not_in_the_store_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path))
    assert threads.main(["--model", "unet-vgg16", "--rounds", "1"]) == 2
    assert "is not in the store" in capsys.readouterr().err
