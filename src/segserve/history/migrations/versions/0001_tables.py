"""The inspection history's tables: inspections, and blobs for their images.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(64), primary_key=True, comment="SHA-256 of data, hex"),
        sa.Column("media_type", sa.String(40), nullable=False, comment="image/png, image/jpeg, or the photo's type"),
        sa.Column("size", sa.BigInteger, nullable=False, comment="bytes of data"),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("used_at", sa.DateTime, nullable=False, comment="UTC; the last time an inspection referred to it"),
    )
    op.create_table(
        "inspections",
        sa.Column("id", sa.String(36), primary_key=True, comment="the inspection_id (a UUID, version 7)"),
        sa.Column("created_at", sa.DateTime, nullable=False, comment="UTC time of the answer"),
        sa.Column("transport", sa.String(8), nullable=False),
        sa.Column("asset_id", sa.String(200), nullable=False, server_default=""),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("photo_sha256", sa.String(64), nullable=False),
        sa.Column("photo_bytes", sa.BigInteger, nullable=False),
        sa.Column("photo_kept", sa.Boolean, nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("corrosion_asset_ratio", sa.Float, nullable=False),
        sa.Column("rust_grade", sa.Integer, nullable=False),
        sa.Column("coverage", sa.JSON, nullable=False, comment="ClassCoverage fields per class; null for a NaN"),
        sa.Column("mean_confidence", sa.Float, nullable=True),
        sa.Column("low_confidence_fraction", sa.Float, nullable=True),
        sa.Column("confidence_threshold", sa.Float, nullable=True),
        sa.Column("needs_review", sa.Boolean, nullable=False),
        sa.Column("review_reasons", sa.JSON, nullable=False, comment="ReviewReason names"),
        sa.Column("models_agreement", sa.Float, nullable=True),
        sa.Column("mask_sha256", sa.String(64), nullable=False, comment="blobs.sha256 of the class-id mask PNG"),
        sa.Column("overlay_sha256", sa.String(64), nullable=True, comment="blobs.sha256 of the overlay thumbnail"),
    )


def downgrade() -> None:
    op.drop_table("inspections")
    op.drop_table("blobs")
