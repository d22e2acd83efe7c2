"""Fixtures that start real servers on loopback: a tiny-model BentoML store and one `bentoml serve` per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import LiveServer, make_tiny_store, start_server, stop_server, wait_until_serving


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BentoML home holding small stand-ins of both models."""
    home = tmp_path_factory.mktemp("bentoml_home")
    make_tiny_store(home)
    return home


@pytest.fixture(scope="session")
def live_server(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """`bentoml serve bento.service:SegServe` on free loopback ports, HTTP and gRPC, serving the tiny store."""
    log = tmp_path_factory.mktemp("server") / "serve.log"
    # 24 gRPC and 24 HTTP requests at once in the batching test: above the default in-flight limit of 16.
    server = start_server(tiny_store, log, max_latency_ms=5000, max_concurrent_requests=32)
    try:
        wait_until_serving(server)
        yield server
    finally:
        stop_server(server)
