"""Load tests of a running segserve server: Locust over both transports (locustfile), the benchmark against the
raw engines (bench), the overload curve, the burst, the soak, profiling and serving configurations side by side
(tune), all on the shared harness in ``loadtests.harness``. The in-process engine benchmarks are in ``benchmarks``."""
