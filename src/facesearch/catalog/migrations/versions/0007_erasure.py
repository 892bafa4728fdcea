"""erasure: keyed hashes of erased content, so the same bytes are refused at the next ingest

Revision ID: 0007_erasure
Revises: 0006_views
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_erasure"
down_revision = "0006_views"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erased_content",
        sa.Column("keyed_hash", sa.String(64), primary_key=True),
        sa.Column("erased_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("erased_content")
