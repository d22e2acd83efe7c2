"""The inspection history's tables (SQLAlchemy Core), as the newest migration leaves them.

``inspections`` holds one row per answered Segment call; ``blobs`` holds the images, content-addressed by their
SHA-256 (a mask two answers share is stored once): the class-id mask PNG, the overlay thumbnail JPEG and, where
SEGSERVE_HISTORY_KEEP_PHOTOS is on, the photo. Times are UTC. ``migrations/`` creates these tables;
tests/test_history_store.py checks that the two never differ.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, DateTime, Float, Index, Integer, LargeBinary, MetaData, String
from sqlalchemy import Table as _Table

metadata = MetaData()

ID_LENGTH = 36  # a UUID in its text form
SHA256_LENGTH = 64  # hex
MAX_ASSET_ID = 200

blobs = _Table(
    "blobs",
    metadata,
    Column("sha256", String(SHA256_LENGTH), primary_key=True, comment="SHA-256 of data, hex"),
    Column("media_type", String(40), nullable=False, comment="image/png, image/jpeg, or the photo's type"),
    Column("size", BigInteger, nullable=False, comment="bytes of data"),
    Column("data", LargeBinary, nullable=False),
    Column("used_at", DateTime, nullable=False, comment="UTC; the last time an inspection referred to it"),
)

inspections = _Table(
    "inspections",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True, comment="the inspection_id (a UUID, version 7)"),
    Column("created_at", DateTime, nullable=False, comment="UTC time of the answer"),
    Column("transport", String(8), nullable=False),
    Column("asset_id", String(MAX_ASSET_ID), nullable=False, server_default=""),
    Column("labels", JSON, nullable=False),
    Column("photo_sha256", String(SHA256_LENGTH), nullable=False),
    Column("photo_bytes", BigInteger, nullable=False),
    Column("photo_kept", Boolean, nullable=False),
    Column("model", String(64), nullable=False),
    Column("model_version", String(128), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("corrosion_asset_ratio", Float, nullable=False),
    Column("rust_grade", Integer, nullable=False),
    Column("coverage", JSON, nullable=False, comment="ClassCoverage fields per class; null for a NaN"),
    Column("mean_confidence", Float, nullable=True),
    Column("low_confidence_fraction", Float, nullable=True),
    Column("confidence_threshold", Float, nullable=True),
    Column("needs_review", Boolean, nullable=False),
    Column("review_reasons", JSON, nullable=False, comment="ReviewReason names"),
    Column("models_agreement", Float, nullable=True),
    Column("mask_sha256", String(SHA256_LENGTH), nullable=False, comment="blobs.sha256 of the class-id mask PNG"),
    Column("overlay_sha256", String(SHA256_LENGTH), nullable=True, comment="blobs.sha256 of the overlay thumbnail"),
)

# The indexes of the queries: by asset over time, the review queue, retention, and blobs still referred to.
Index("ix_inspections_asset_time", inspections.c.asset_id, inspections.c.created_at)
Index("ix_inspections_review_time", inspections.c.needs_review, inspections.c.created_at)
Index("ix_inspections_created_at", inspections.c.created_at)
Index("ix_inspections_mask", inspections.c.mask_sha256)
Index("ix_inspections_overlay", inspections.c.overlay_sha256)
Index("ix_inspections_photo", inspections.c.photo_sha256)
Index("ix_blobs_used_at", blobs.c.used_at)
