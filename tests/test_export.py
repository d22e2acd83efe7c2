"""training.export: the run's report is (re)written only when missing or stale (the export runs in
test_training.py)."""

from __future__ import annotations

import json
import os

from training import export
from training.data import Pair


def test_ensure_report_rewrites_only_a_missing_or_stale_report(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr(export, "write_run_report", lambda run, data, split, pairs: written.append(split))
    pairs = [Pair("001", tmp_path / "a.png", tmp_path / "b.png")]
    (tmp_path / "best.keras").write_bytes(b"")
    export.ensure_report(tmp_path, pairs, "data")  # missing
    (tmp_path / "metrics.json").write_text(json.dumps({"ids": ["001"]}))
    export.ensure_report(tmp_path, pairs, "data")  # fresh
    export.ensure_report(tmp_path, [*pairs, Pair("002", tmp_path, tmp_path)], "data")  # for other ids
    os.utime(tmp_path / "metrics.json", (1, 1))
    export.ensure_report(tmp_path, pairs, "data")  # older than best.keras
    assert written == ["val", "val", "val"]
