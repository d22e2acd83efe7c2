"""Runtime configuration, read once from the environment. Every variable and its default is listed here."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from functools import lru_cache


@dataclass(frozen=True)
class Settings:
    """segserve settings. Each field is read from ``SEGSERVE_<FIELD NAME IN CAPITALS>``.

    http_port: HTTP port of the BentoML server (SEGSERVE_HTTP_PORT, default 3000).
    grpc_port: port of the gRPC server started inside the service (SEGSERVE_GRPC_PORT, default 50051).
    grpc_host: address the gRPC server binds (SEGSERVE_GRPC_HOST, default 0.0.0.0).
    default_model: model used when a request names none (SEGSERVE_DEFAULT_MODEL, default deeplabv3plus).
    models: the served models, comma separated (SEGSERVE_MODELS, default deeplabv3plus,unet).
    max_image_bytes: largest accepted encoded image (SEGSERVE_MAX_IMAGE_BYTES, default 32 MiB).
    max_image_pixels: largest accepted width*height (SEGSERVE_MAX_IMAGE_PIXELS, default 40 megapixels).
    grpc_max_message_bytes: gRPC send/receive limit (SEGSERVE_GRPC_MAX_MESSAGE_BYTES, default 64 MiB).
    max_batch_size: adaptive batching's largest batch (SEGSERVE_MAX_BATCH_SIZE, default 8).
    max_latency_ms: adaptive batching's latency bound (SEGSERVE_MAX_LATENCY_MS, default 10000).
    max_concurrent_requests: requests in flight per transport before RESOURCE_EXHAUSTED / 429
        (SEGSERVE_MAX_CONCURRENT_REQUESTS, default 64).
    grpc_grace_seconds: how long a draining gRPC server lets requests finish (SEGSERVE_GRPC_GRACE_SECONDS, default 5).
    """

    http_port: int = 3000
    grpc_port: int = 50051
    grpc_host: str = "0.0.0.0"
    default_model: str = "deeplabv3plus"
    models: str = "deeplabv3plus,unet"
    max_image_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    grpc_max_message_bytes: int = 64 * 1024 * 1024
    max_batch_size: int = 8
    max_latency_ms: int = 10_000
    max_concurrent_requests: int = 64
    grpc_grace_seconds: float = 5.0

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.models.split(",") if m.strip())

    @classmethod
    def from_env(cls) -> Settings:
        values = {}
        for f in fields(cls):
            raw = os.environ.get(f"SEGSERVE_{f.name.upper()}")
            if raw is None:
                continue
            kind = type(f.default)
            try:
                values[f.name] = kind(raw)
            except ValueError as exc:
                raise ValueError(f"SEGSERVE_{f.name.upper()}={raw!r} is not a valid {kind.__name__}") from exc
        return cls(**values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings.from_env()
