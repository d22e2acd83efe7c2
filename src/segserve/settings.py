"""Runtime configuration, read once from the environment. Every variable and its default is listed here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache

from segserve.architectures import DEFAULT, ENSEMBLE, ENSEMBLE_MEMBERS, NAMES, SHIPPED


@dataclass(frozen=True)
class Settings:
    """segserve settings. Each field is read from ``SEGSERVE_<FIELD NAME IN CAPITALS>``.

    http_port: HTTP port of the BentoML server (SEGSERVE_HTTP_PORT, default 3000).
    grpc_port: port of the gRPC server started inside the service (SEGSERVE_GRPC_PORT, default 50051).
    grpc_host: address the gRPC server binds (SEGSERVE_GRPC_HOST, default 0.0.0.0).
    default_model: model used when a request names none (SEGSERVE_DEFAULT_MODEL, default: the architecture
        table's default).
    models: the served models, comma separated (SEGSERVE_MODELS, default: the shipped ones).
    ensemble: the served models that ``ensemble`` averages, comma separated (SEGSERVE_ENSEMBLE, default: the
        architecture table's members when they are served, else every served model when there are two or more).
    max_image_bytes: largest accepted encoded image (SEGSERVE_MAX_IMAGE_BYTES, default 32 MiB).
    max_image_pixels: largest accepted width*height (SEGSERVE_MAX_IMAGE_PIXELS, default 40 megapixels).
    grpc_max_message_bytes: gRPC send/receive limit (SEGSERVE_GRPC_MAX_MESSAGE_BYTES, default 64 MiB).
    max_batch_size: adaptive batching's largest batch (SEGSERVE_MAX_BATCH_SIZE, default 8; 2 or more).
    max_latency_ms: adaptive batching's latency bound (SEGSERVE_MAX_LATENCY_MS, default 10000).
    max_concurrent_requests: requests in flight per transport before RESOURCE_EXHAUSTED / 429
        (SEGSERVE_MAX_CONCURRENT_REQUESTS, default 16: two full batches per transport, so that excess load is
        refused at once rather than queued; about 8 per core is a fair start on a larger machine).
    grpc_grace_seconds: how long a draining gRPC server lets requests finish (SEGSERVE_GRPC_GRACE_SECONDS, default 5).
    backend: what runs the models: auto, openvino, onnxruntime or tensorflow (SEGSERVE_BACKEND, default auto:
        OpenVINO where it is installed, else ONNX Runtime; see segserve.engines).
    precision: auto, f32 or bf16 (SEGSERVE_PRECISION, default auto: bfloat16 on OpenVINO where the CPU has it
        natively and the model passed parity on this kind of machine, else float32).
    openvino_cache_dir: where OpenVINO keeps compiled models so restarts skip compiling
        (SEGSERVE_OPENVINO_CACHE_DIR, default $BENTOML_HOME/segserve/openvino-cache).
    model_threads: threads of one forward pass (SEGSERVE_MODEL_THREADS, default 0: every CPU this process may
        use, ``segserve.engines.usable_cpus``: fewer than the host's cores under a container's CPU limit).
    model_workers: processes of the model service, each with every model (SEGSERVE_MODEL_WORKERS, default 1).
    entry_workers: processes of the entry service, each with its own HTTP handler and gRPC server on the shared
        ports (SO_REUSEPORT) and its own admission budgets (SEGSERVE_ENTRY_WORKERS, default 1; raise it on a
        machine with more cores, so that decoding and encoding keep up with the model: docs/configuration.md).
    model_spinning: ONNX Runtime's threads spin while waiting for work (SEGSERVE_MODEL_SPINNING, default false:
        they sleep, and leave the cores to decoding and encoding between forward passes).
    max_pixels_in_flight: decoded pixels admitted at once over both transports; a request over the rest waits
        up to admission_wait_seconds, then gets RESOURCE_EXHAUSTED / 429 (SEGSERVE_MAX_PIXELS_IN_FLIGHT,
        default 160 megapixels: four photos at the 40-megapixel limit; what a burst takes over idle is in
        docs/performance.md, "A burst of the largest photos").
    admission_wait_seconds: how long a request waits for pixels (SEGSERVE_ADMISSION_WAIT_SECONDS, default 2).
    auth_tokens: accepted bearer tokens, comma separated; none: no authentication (SEGSERVE_AUTH_TOKENS).
    auth_tokens_file: a file of accepted bearer tokens, one a line (SEGSERVE_AUTH_TOKENS_FILE).
    metrics_public: /metrics answers without a token (SEGSERVE_METRICS_PUBLIC, default true).
    tls_cert_file, tls_key_file: the server's certificate chain and key (PEM); both set: TLS on gRPC and HTTP
        (SEGSERVE_TLS_CERT_FILE, SEGSERVE_TLS_KEY_FILE).
    tls_client_ca_file: with TLS, gRPC clients must present a certificate signed by this CA (mutual TLS)
        (SEGSERVE_TLS_CLIENT_CA_FILE).
    data_dir: where the server keeps its data, the inspection history's SQLite file among it (SEGSERVE_DATA_DIR,
        default $BENTOML_HOME/segserve/data).
    history: keep every answered Segment call in the inspection history (SEGSERVE_HISTORY, default on; off keeps
        nothing and the history RPCs answer UNAVAILABLE / 503).
    history_url: the history's database as an SQLAlchemy URL, e.g. postgresql://user:password@host/segserve
        (SEGSERVE_HISTORY_URL, default: SQLite at $SEGSERVE_DATA_DIR/history.sqlite3, for one replica only).
    history_keep_photos: keep the photos too, not only their SHA-256 and size (SEGSERVE_HISTORY_KEEP_PHOTOS,
        default false: photos of a plant may be sensitive).
    history_retention_days: delete inspections older than this many days, checked hourly
        (SEGSERVE_HISTORY_RETENTION_DAYS, default 0: keep them all).
    history_queue_size: answers waiting to be written, at most; past it an answer is served but not kept, and
        counted as dropped (SEGSERVE_HISTORY_QUEUE_SIZE, default 256).
    history_queue_bytes: bytes of photos and masks waiting to be written, at most (SEGSERVE_HISTORY_QUEUE_BYTES,
        default 256 MiB): with history_queue_size, the bound on the memory the history takes.
    history_max_attempts: tries to write a batch of inspections, with a growing pause between them (1 s doubling
        up to 60 s), before it is counted as dropped (SEGSERVE_HISTORY_MAX_ATTEMPTS, default 12: about 6 minutes).
    """

    http_port: int = 3000
    grpc_port: int = 50051
    grpc_host: str = "0.0.0.0"
    default_model: str = DEFAULT
    models: str = ",".join(SHIPPED)
    ensemble: str = ""
    max_image_bytes: int = 32 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    grpc_max_message_bytes: int = 64 * 1024 * 1024
    max_batch_size: int = 8
    max_latency_ms: int = 10_000
    max_concurrent_requests: int = 16
    grpc_grace_seconds: float = 5.0
    backend: str = "auto"
    precision: str = "auto"
    openvino_cache_dir: str = ""
    model_threads: int = 0
    model_workers: int = 1
    entry_workers: int = 1
    model_spinning: bool = False
    max_pixels_in_flight: int = 160_000_000
    admission_wait_seconds: float = 2.0
    auth_tokens: str = ""
    auth_tokens_file: str = ""
    metrics_public: bool = True
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    data_dir: str = ""
    history: bool = True
    history_url: str = ""
    history_keep_photos: bool = False
    history_retention_days: int = 0
    history_queue_size: int = 256
    history_queue_bytes: int = 256 * 1024 * 1024
    history_max_attempts: int = 12

    def __post_init__(self) -> None:
        from segserve.predictor import BACKENDS, PRECISIONS

        if self.backend not in ("auto", *BACKENDS):
            raise ValueError(f"SEGSERVE_BACKEND={self.backend!r} is not one of auto, {', '.join(BACKENDS)}")
        if self.precision not in ("auto", *PRECISIONS):
            raise ValueError(f"SEGSERVE_PRECISION={self.precision!r} is not one of auto, {', '.join(PRECISIONS)}")
        unknown = [m for m in self.model_names if m not in NAMES]
        if unknown or not self.model_names:
            raise ValueError(
                f"SEGSERVE_MODELS={self.models!r} names no model or unknown ones ({', '.join(unknown)}); "
                f"the models are {', '.join(NAMES)}"
            )
        strangers = [m for m in self.ensemble_members if m not in self.model_names]
        if strangers or (self.ensemble and len(self.ensemble_members) < 2):
            raise ValueError(
                f"SEGSERVE_ENSEMBLE={self.ensemble!r} must name two or more served models; SEGSERVE_MODELS is "
                f"{self.models!r}"
            )
        ensemble = (ENSEMBLE,) if self.ensemble_members else ()
        if self.default_model not in (*self.model_names, *ensemble):
            raise ValueError(
                f"SEGSERVE_DEFAULT_MODEL={self.default_model!r} is not served; SEGSERVE_MODELS is {self.models!r}"
            )
        if self.max_batch_size < 2:
            raise ValueError(
                f"SEGSERVE_MAX_BATCH_SIZE={self.max_batch_size} must be 2 or more (BentoML's adaptive batching takes "
                "no less)"
            )
        if self.entry_workers < 1 or self.model_workers < 1:
            raise ValueError("SEGSERVE_ENTRY_WORKERS and SEGSERVE_MODEL_WORKERS must be at least 1")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("SEGSERVE_TLS_CERT_FILE and SEGSERVE_TLS_KEY_FILE must be set together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("SEGSERVE_TLS_CLIENT_CA_FILE needs SEGSERVE_TLS_CERT_FILE and SEGSERVE_TLS_KEY_FILE")
        if self.max_pixels_in_flight < self.max_image_pixels:
            raise ValueError(
                f"SEGSERVE_MAX_PIXELS_IN_FLIGHT={self.max_pixels_in_flight} is below SEGSERVE_MAX_IMAGE_PIXELS="
                f"{self.max_image_pixels}: the largest photo could never be admitted"
            )
        lowest = {
            "model_threads": 0,
            "history_retention_days": 0,
            "history_queue_size": 1,
            "history_queue_bytes": 1,
            "history_max_attempts": 1,
        }
        for name, least in lowest.items():
            if getattr(self, name) < least:
                raise ValueError(f"SEGSERVE_{name.upper()}={getattr(self, name)} must be {least} or more")

    @property
    def tls(self) -> bool:
        """Whether TLS is on (both the certificate and the key are set)."""
        return bool(self.tls_cert_file and self.tls_key_file)

    @property
    def model_names(self) -> tuple[str, ...]:
        return _names(self.models)

    @property
    def ensemble_members(self) -> tuple[str, ...]:
        """The models the ensemble averages, in a fixed order; empty when there is no ensemble."""
        if self.ensemble:
            return tuple(sorted(_names(self.ensemble)))
        if len(ENSEMBLE_MEMBERS) >= 2 and set(ENSEMBLE_MEMBERS) <= set(self.model_names):
            return tuple(sorted(ENSEMBLE_MEMBERS))
        return tuple(sorted(self.model_names)) if len(self.model_names) >= 2 else ()

    @property
    def http_ssl(self) -> dict[str, object]:
        """BentoML's ``ssl`` service configuration for HTTP: empty without TLS (gRPC takes the same files)."""
        if not self.tls:
            return {}
        return {"enabled": True, "certfile": self.tls_cert_file, "keyfile": self.tls_key_file}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings ``environ`` gives (default: this process's environment)."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(f"SEGSERVE_{f.name.upper()}")
            if raw is None:
                continue
            kind = type(f.default)
            try:
                values[f.name] = _parse_bool(raw) if kind is bool else kind(raw)
            except ValueError as exc:
                raise ValueError(f"SEGSERVE_{f.name.upper()}={raw!r} is not a valid {kind.__name__}") from exc
        return cls(**values)


def _names(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings.from_env()
