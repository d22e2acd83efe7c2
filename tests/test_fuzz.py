"""A short run of the atheris fuzz target for the decode path (fuzz/fuzz_decode.py); `make fuzz` runs it longer.

The target raises (and libFuzzer exits non-zero, writing the input out) on any exception other than
SegServeError from decode_image / decode_mask / read_header, or on a decoded result of the wrong shape, size or ids.
"""

from __future__ import annotations

import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.seeds import seeds, write_seeds

ROOT = Path(__file__).resolve().parents[1]
RUNS = 2000


def test_seed_corpus_covers_every_format():
    names = set(seeds())
    for ext in ("png", "jpg", "bmp", "tiff", "webp", "gif", "jp2"):
        assert any(n.endswith("." + ext) for n in names), ext
    assert {"mask_colour.png", "mask_ids.png", "mask_ids_int16.tiff"} <= names
    # Past findings stay in the corpus, so the short run in this suite replays them.
    assert {"mask_ids_idat_length_bomb.png", "pgm_read_two_ways.pgm", "photo_taller_than_opencv_reads.tiff"} <= names


def rss_limit_mb(headroom_mb: int = 2048) -> int:
    """libFuzzer's memory limit for a run started from this process: 2 GB over this process's peak.

    Linux carries a process's peak RSS over fork and exec into the child's, so a fuzzer started from a test run
    that has loaded TensorFlow starts with that peak already counted against its limit.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 + headroom_mb


@pytest.mark.timeout(120)
def test_decode_fuzz_target_survives_a_short_run(tmp_path):
    corpus = tmp_path / "corpus"
    written = write_seeds(corpus)
    assert len(written) == len(seeds())
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "fuzz" / "fuzz_decode.py"),
            "-seed=1",  # the same mutations every run
            f"-runs={RUNS}",
            "-max_total_time=20",
            "-timeout=10",
            f"-rss_limit_mb={rss_limit_mb()}",
            f"-artifact_prefix={artifacts}/",
            str(corpus),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    log = proc.stdout + proc.stderr
    tail = log[-3000:]
    assert proc.returncode == 0, tail
    assert list(artifacts.iterdir()) == [], tail  # no crash, timeout, leak or out-of-memory input written
    # Every seed was read, and the run ended by itself: all RUNS inputs, or the time cap on a busy machine.
    assert f"seed corpus: files: {len(written)} " in log, tail
    assert re.search(r"INITED cov: \d+", log), tail
    done = re.search(r"Done (\d+) runs in (\d+) second", log)
    assert done, tail
    runs, seconds = int(done.group(1)), int(done.group(2))
    assert runs == RUNS or seconds >= 20, tail
    assert runs > len(written), tail
