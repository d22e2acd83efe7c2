"""The in-process tests' served models: the ResNet50 pair (``deeplabv3plus``, the default, and ``unet``) and their
ensemble, whatever ``segserve.architectures`` ships, so that those tests do not change when the shipped models do."""

from __future__ import annotations

from typing import Any

from segserve.settings import Settings

TWO_MODELS = ("deeplabv3plus", "unet")


def two_model_settings(**fields: Any) -> Settings:
    """Settings serving TWO_MODELS (default ``deeplabv3plus``), with ``fields`` on top."""
    return Settings(**{"models": ",".join(TWO_MODELS), "default_model": TWO_MODELS[0], **fields})
