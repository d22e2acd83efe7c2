"""Model architectures. Importing this package registers the custom layers that saved models need."""

from __future__ import annotations

from collections.abc import Callable

import keras

from segserve.models.deeplabv3plus import build_deeplabv3plus
from segserve.models.layers import BroadcastLike
from segserve.models.unet import build_unet

BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "deeplabv3plus": build_deeplabv3plus,
    "unet": build_unet,
}


def build_model(name: str, **kwargs) -> keras.Model:
    """Build the architecture called ``name`` (a key of BUILDERS) with the builder's keyword arguments."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(BUILDERS)}")
    return BUILDERS[name](**kwargs)


__all__ = ["BUILDERS", "BroadcastLike", "build_deeplabv3plus", "build_model", "build_unet"]
