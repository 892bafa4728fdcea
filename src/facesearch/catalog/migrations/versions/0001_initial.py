"""initial catalog: collections, images, faces, ingest journal

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("legal_basis", sa.Text, nullable=False),
        sa.Column("retention_days", sa.Integer, nullable=True),
        sa.Column("keep_thumbnails", sa.Boolean, nullable=False),
        sa.Column("pack", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "images",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("collection_id", sa.Integer, sa.ForeignKey("collections.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("face_count", sa.Integer, nullable=False),
        sa.Column("ingested_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("collection_id", "sha256", name="uq_image_content"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "faces",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("collection_id", sa.Integer, sa.ForeignKey("collections.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("face_index", sa.Integer, nullable=False),
        sa.Column("x1", sa.Float, nullable=False),
        sa.Column("y1", sa.Float, nullable=False),
        sa.Column("x2", sa.Float, nullable=False),
        sa.Column("y2", sa.Float, nullable=False),
        sa.Column("landmarks", sa.Text, nullable=False),
        sa.Column("det_score", sa.Float, nullable=False),
        sa.Column("quality", sa.Float, nullable=False),
        sa.Column("quality_issues", sa.Text, nullable=False),
        sa.Column("pack", sa.String(200), nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("thumbnail", sa.Text, nullable=True),
        # Never reuse a face id: an id must not name a different person after an erasure.
        sqlite_autoincrement=True,
    )
    op.create_table(
        "ingest_journal",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("collection_id", sa.Integer, sa.ForeignKey("collections.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("faces", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_journal_run", "ingest_journal", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_journal_run", "ingest_journal")
    for table in ("ingest_journal", "faces", "images", "collections"):
        op.drop_table(table)
