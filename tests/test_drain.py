"""segserve.drain: a model worker defers its stop until the entries' calls in flight are done."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from segserve.drain import defer_stop_until_drained, entry_calls_in_flight, wait_until_drained

# A worker process that counts calls in flight on the service's gauge, as an entry worker does.
ENTRY = """
from segserve.telemetry import get_telemetry
gauge = get_telemetry().in_flight
gauge.labels(transport="grpc").inc(2)
gauge.labels(transport="http").inc()
gauge.labels(transport="http").dec()
print("counted", flush=True)
input()  # alive until the test has read the gauge
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_waits_until_no_call_is_in_flight():
    clock = FakeClock()
    counts = iter([2, 1, 1, 0])
    assert wait_until_drained(lambda: next(counts), grace=10, poll=0.5, clock=clock, sleep=clock.sleep)
    assert clock.now == 1.5  # three polls while calls were in flight


def test_gives_up_when_the_grace_period_is_over():
    clock = FakeClock()
    assert not wait_until_drained(lambda: 1, grace=2, poll=0.5, clock=clock, sleep=clock.sleep)
    assert clock.now == 2.0


def test_reads_the_gauge_every_worker_writes(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    worker = subprocess.Popen([sys.executable, "-c", ENTRY], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert worker.stdout.readline() == "counted\n"
        assert entry_calls_in_flight(str(tmp_path)) == 2  # the gRPC calls still counted, the HTTP one done
    finally:
        worker.communicate("\n", timeout=30)
    assert entry_calls_in_flight(str(tmp_path)) == 0  # a worker that is gone counts nothing
    assert entry_calls_in_flight(str(tmp_path / "empty")) == 0


def test_no_multiprocess_directory_means_nothing_in_flight(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert entry_calls_in_flight() == 0


# A server process's stop, deferred: its own handler of SIGUSR1 stands for the server's stop. It runs in a process
# of its own, so that no signal reaches the test runner's.
DEFERRED_STOP = """
import signal, sys, threading
from segserve.drain import defer_stop_until_drained
grace, drains = float(sys.argv[1]), sys.argv[2] == "drains"
stopped = threading.Event()
signal.signal(signal.SIGUSR1, lambda sig, frame: stopped.set())  # the server's own handler
in_flight = [1]
assert defer_stop_until_drained(grace, lambda: in_flight[0], signal.SIGUSR1)
signal.raise_signal(signal.SIGUSR1)
print("stopped with a call in flight:", stopped.wait(0.3), flush=True)
if drains:
    in_flight[0] = 0
print("stopped:", stopped.wait(5), flush=True)
"""


def deferred_stop(grace: float, drains: bool) -> list[str]:
    result = subprocess.run([sys.executable, "-c", DEFERRED_STOP, str(grace), "drains" if drains else "stays"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()


def test_the_signal_stops_the_server_only_once_drained():
    # a call is in flight: the server keeps serving, and stops once it is done
    assert deferred_stop(5.0, drains=True) == ["stopped with a call in flight: False", "stopped: True"]


def test_the_signal_stops_the_server_after_the_grace_period():
    assert deferred_stop(0.1, drains=False)[-1] == "stopped: True"


@pytest.fixture
def sigusr1_handler():
    before = signal.getsignal(signal.SIGUSR1)
    yield
    signal.signal(signal.SIGUSR1, before)


def test_a_default_handler_is_left_alone(sigusr1_handler):
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    assert not defer_stop_until_drained(1.0, lambda: 0, signal.SIGUSR1)
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
