"""The serving process tree: finding its root, naming its processes, finding its service workers, and sampling
the resident memory (RSS) of every process in it over time."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import psutil

MB = 2**20


@dataclass
class MemorySample:
    """The RSS of one process at one time (seconds from the sampler's start)."""

    t: float
    pid: int
    role: str
    rss_mb: float


def tree(root: psutil.Process) -> list[psutil.Process]:
    """The root and all its descendants (just the root once it has gone)."""
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return [root]


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (processes that end meanwhile count nothing)."""
    total = 0
    for proc in tree(psutil.Process(pid)):
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def role_of(proc: psutil.Process) -> str:
    """A short name for a serving process: the BentoML service it runs, or its program."""
    try:
        args = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    for flag in ("--service-name", "--runner-name"):
        if flag in args and args.index(flag) + 1 < len(args):
            return args[args.index(flag) + 1]
    joined = " ".join(args)
    for word in ("bentoml serve", "segserve.cli", "prometheus", "circus"):
        if word in joined:
            return word.replace(" ", "-")
    try:
        return proc.name()
    except psutil.Error:
        return "?"


def _is_server(proc: psutil.Process) -> bool:
    try:
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return "bentoml" in cmdline or "segserve" in cmdline or "_bentoml_impl" in cmdline


def find_server_root(pid: int | None, ports: set[int]) -> psutil.Process:
    """The serving process tree's root: ``pid``, or the topmost segserve/bentoml ancestor of whatever listens on
    ``ports``. Raises LookupError when there is none."""
    if pid is not None:
        try:
            return psutil.Process(pid)
        except psutil.NoSuchProcess as exc:
            raise LookupError(f"no process {pid}") from exc
    listeners = {
        conn.pid
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in ports and conn.pid
    }
    if not listeners:
        raise LookupError(f"no process listens on ports {sorted(ports)}; pass --pid of the `bentoml serve` process")
    root = psutil.Process(min(listeners))
    while (parent := root.parent()) is not None and _is_server(parent):
        root = parent
    return root


def service_workers(pid: int) -> dict[str, int]:
    """{"entry": pid, "model": pid}: the segserve entry and model service workers of a `bentoml serve` process."""
    found = {}
    for child in tree(psutil.Process(pid))[1:]:
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "_bentoml_impl.worker.service" in cmdline:
            found["model" if "segserve-models" in cmdline else "entry"] = child.pid
    if set(found) != {"entry", "model"}:
        raise LookupError(f"process {pid} has no segserve entry and model workers: is it `bentoml serve`?")
    return found


class MemorySampler(threading.Thread):
    """Samples the RSS of a process and all its descendants every ``period`` seconds, from ``start()`` until
    ``stop()`` (which takes one last sample). Use it as a context manager to start and stop it."""

    def __init__(self, root: psutil.Process | int, period: float = 5.0, t0: float | None = None) -> None:
        super().__init__(daemon=True)
        self.root = root if isinstance(root, psutil.Process) else psutil.Process(root)
        self.period = period
        self.t0 = time.monotonic() if t0 is None else t0
        self.samples: list[MemorySample] = []
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    def sample(self) -> None:
        """Record the RSS of every process of the tree now."""
        now = round(time.monotonic() - self.t0, 3)
        taken = []
        for proc in tree(self.root):
            try:
                rss = proc.memory_info().rss / MB
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            taken.append(MemorySample(now, proc.pid, role_of(proc), round(rss, 1)))
        with self._lock:
            self.samples.extend(taken)

    def run(self) -> None:
        while not self._stopped.is_set():
            self.sample()
            self._stopped.wait(self.period)

    def stop(self) -> None:
        """Stop sampling, after one last sample."""
        self._stopped.set()
        if self.is_alive():
            self.join()
        self.sample()

    def __enter__(self) -> MemorySampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def totals(self, lo: float = 0.0, hi: float = float("inf")) -> dict[float, float]:
        """The tree's total RSS (MB) at each sample time in [lo, hi]."""
        with self._lock:
            return total_rss(self.samples, lo, hi)

    @property
    def peak_mb(self) -> float:
        """The largest total RSS of the tree seen (MB); 0 before any sample."""
        return max(self.totals().values(), default=0.0)


def total_rss(samples: list[MemorySample], lo: float = 0.0, hi: float = float("inf")) -> dict[float, float]:
    """The sum of RSS (MB) over the processes, per sample time in [lo, hi]."""
    totals: dict[float, float] = {}
    for s in samples:
        if lo <= s.t <= hi:
            totals[s.t] = totals.get(s.t, 0.0) + s.rss_mb
    return totals
