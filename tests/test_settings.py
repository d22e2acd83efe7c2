"""segserve.settings: defaults, SEGSERVE_* overrides, invalid values, model list parsing."""

from __future__ import annotations

import os
from dataclasses import fields

import pytest

from segserve import architectures
from segserve.settings import Settings, get_settings


@pytest.fixture
def clean_env(monkeypatch):
    """No SEGSERVE_* variable set, and no cached settings before or after the test."""
    for name in list(os.environ):
        if name.startswith("SEGSERVE_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_defaults(clean_env):
    s = Settings.from_env()
    assert s == Settings()
    assert s.http_port == 3000
    assert s.grpc_port == 50051
    assert s.grpc_host == "0.0.0.0"
    assert s.default_model == architectures.DEFAULT
    assert s.model_names == architectures.SHIPPED
    assert s.ensemble_members == tuple(sorted(architectures.ENSEMBLE_MEMBERS))
    assert s.max_image_bytes == 32 * 1024 * 1024
    assert s.max_image_pixels == 40_000_000
    assert s.grpc_max_message_bytes == 64 * 1024 * 1024
    assert s.max_batch_size == 8
    assert s.max_latency_ms == 10_000
    assert s.max_concurrent_requests == 16
    assert s.grpc_grace_seconds == 5.0


def test_every_field_is_documented():
    doc = Settings.__doc__ or ""
    for f in fields(Settings):
        assert f"SEGSERVE_{f.name.upper()}" in doc, f.name


@pytest.mark.parametrize(
    ("variable", "raw", "field", "expected"),
    [
        ("SEGSERVE_HTTP_PORT", "8080", "http_port", 8080),
        ("SEGSERVE_GRPC_PORT", " 50052 ", "grpc_port", 50052),
        ("SEGSERVE_GRPC_HOST", "127.0.0.1", "grpc_host", "127.0.0.1"),
        ("SEGSERVE_DEFAULT_MODEL", "unet", "default_model", "unet"),
        ("SEGSERVE_MAX_IMAGE_BYTES", "1024", "max_image_bytes", 1024),
        ("SEGSERVE_MAX_BATCH_SIZE", "2", "max_batch_size", 2),
        ("SEGSERVE_GRPC_GRACE_SECONDS", "0.5", "grpc_grace_seconds", 0.5),
        ("SEGSERVE_GRPC_GRACE_SECONDS", "2", "grpc_grace_seconds", 2.0),
        ("SEGSERVE_HISTORY", "off", "history", False),
        ("SEGSERVE_HISTORY_URL", "postgresql://u@db/segserve", "history_url", "postgresql://u@db/segserve"),
        ("SEGSERVE_DATA_DIR", "/var/lib/segserve", "data_dir", "/var/lib/segserve"),
        ("SEGSERVE_HISTORY_KEEP_PHOTOS", "true", "history_keep_photos", True),
        ("SEGSERVE_HISTORY_RETENTION_DAYS", "365", "history_retention_days", 365),
        ("SEGSERVE_HISTORY_QUEUE_SIZE", "10", "history_queue_size", 10),
    ],
)
def test_env_override(clean_env, variable, raw, field, expected):
    clean_env.setenv(variable, raw)
    s = Settings.from_env()
    value = getattr(s, field)
    assert value == expected
    assert type(value) is type(expected)
    # The other fields keep their defaults.
    others = {f.name for f in fields(Settings)} - {field}
    assert all(getattr(s, name) == getattr(Settings(), name) for name in others)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("SEGSERVE_HTTP_PORT", "abc"),
        ("SEGSERVE_MAX_BATCH_SIZE", "3.5"),
        ("SEGSERVE_MAX_BATCH_SIZE", "1"),
        ("SEGSERVE_MAX_BATCH_SIZE", "0"),
        ("SEGSERVE_MAX_IMAGE_PIXELS", ""),
        ("SEGSERVE_GRPC_GRACE_SECONDS", "soon"),
    ],
)
def test_invalid_number_names_the_variable(clean_env, variable, raw):
    clean_env.setenv(variable, raw)
    with pytest.raises(ValueError, match=variable):
        Settings.from_env()


@pytest.mark.parametrize(
    ("models", "default", "expected"),
    [
        ("deeplabv3plus,unet", "deeplabv3plus", ("deeplabv3plus", "unet")),
        ("unet", "unet", ("unet",)),
        (" unet , deeplabv3plus ,, ", "ensemble", ("unet", "deeplabv3plus")),
    ],
)
def test_model_names(models, default, expected):
    assert Settings(models=models, default_model=default).model_names == expected


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"models": ""}, "names no model"),
        ({"models": ","}, "names no model"),
        ({"models": "deeplabv3plus,segnet"}, "unknown ones \\(segnet\\)"),
        ({"models": "unet", "default_model": "deeplabv3plus"}, "SEGSERVE_DEFAULT_MODEL='deeplabv3plus' is not served"),
        ({"tls_cert_file": "c.pem"}, "must be set together"),
        ({"tls_client_ca_file": "ca.pem"}, "needs SEGSERVE_TLS_CERT_FILE"),
        ({"max_pixels_in_flight": 1000}, "could never be admitted"),
        ({"backend": "torch"}, "not one of auto, openvino, onnxruntime, tensorflow"),
        ({"precision": "fp16"}, "not one of auto, f32, bf16"),
        ({"history_queue_size": 0}, "SEGSERVE_HISTORY_QUEUE_SIZE=0 must be 1 or more"),
        ({"history_retention_days": -1}, "SEGSERVE_HISTORY_RETENTION_DAYS=-1 must be 0 or more"),
        ({"history_max_attempts": 0}, "SEGSERVE_HISTORY_MAX_ATTEMPTS=0 must be 1 or more"),
        ({"model_threads": -1}, "SEGSERVE_MODEL_THREADS=-1 must be 0 or more"),
    ],
)
def test_settings_that_cannot_work_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        Settings(**fields)


def test_the_history_is_on_by_default_and_keeps_no_photos(clean_env):
    s = Settings.from_env()
    assert s.history is True and s.history_keep_photos is False and s.history_url == ""
    assert s.history_retention_days == 0 and s.history_queue_size == 256


def test_booleans_from_env(clean_env):
    clean_env.setenv("SEGSERVE_METRICS_PUBLIC", "false")
    assert Settings.from_env().metrics_public is False
    clean_env.setenv("SEGSERVE_METRICS_PUBLIC", "maybe")
    with pytest.raises(ValueError, match="SEGSERVE_METRICS_PUBLIC='maybe' is not a valid bool"):
        Settings.from_env()


def test_models_from_env(clean_env):
    clean_env.setenv("SEGSERVE_MODELS", "unet, deeplabv3plus")
    clean_env.setenv("SEGSERVE_DEFAULT_MODEL", "deeplabv3plus")
    assert Settings.from_env().model_names == ("unet", "deeplabv3plus")


def test_get_settings_reads_once(clean_env):
    clean_env.setenv("SEGSERVE_HTTP_PORT", "4000")
    first = get_settings()
    clean_env.setenv("SEGSERVE_HTTP_PORT", "5000")
    assert get_settings() is first
    assert first.http_port == 4000
    get_settings.cache_clear()
    assert get_settings().http_port == 5000


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().http_port = 1  # type: ignore[misc]
