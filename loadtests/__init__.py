"""Load tests and benchmarks of a running segserve server (Locust over both transports, and loadtests.bench)."""
