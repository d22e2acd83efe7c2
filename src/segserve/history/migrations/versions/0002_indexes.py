"""The indexes of the history's queries: by asset over time, the review queue, retention, blobs in use.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_inspections_asset_time": ("inspections", ["asset_id", "created_at"]),
    "ix_inspections_review_time": ("inspections", ["needs_review", "created_at"]),
    "ix_inspections_created_at": ("inspections", ["created_at"]),
    "ix_inspections_mask": ("inspections", ["mask_sha256"]),
    "ix_inspections_overlay": ("inspections", ["overlay_sha256"]),
    "ix_inspections_photo": ("inspections", ["photo_sha256"]),
    "ix_blobs_used_at": ("blobs", ["used_at"]),
}


def upgrade() -> None:
    for name, (table, columns) in INDEXES.items():
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, (table, _) in INDEXES.items():
        op.drop_index(name, table_name=table)
