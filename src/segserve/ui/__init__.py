"""The page for people served at /ui: upload a photo, pick a model, see the overlay and the numbers."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def page() -> str:
    """The page's HTML (one file: its styles and script inline, nothing fetched from elsewhere)."""
    return resources.files(__package__).joinpath("index.html").read_text(encoding="utf-8")
