"""Model architectures. Importing this package registers the custom layers that saved models need.

Which architectures exist is said once, in ``segserve.architectures``; this package holds their builders.
"""

from __future__ import annotations

from segserve.architectures import get
from segserve.models.deeplabv3plus import build_deeplabv3plus
from segserve.models.layers import BroadcastLike
from segserve.models.unet import build_unet


def build_model(name: str, **kwargs):
    """Build the architecture called ``name`` (see segserve.architectures) with the builder's keyword arguments."""
    return get(name).build(**kwargs)


__all__ = ["BroadcastLike", "build_deeplabv3plus", "build_model", "build_unet"]
