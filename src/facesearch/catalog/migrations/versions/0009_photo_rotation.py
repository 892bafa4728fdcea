"""photo rotation: how far a sideways scan (no EXIF) was turned for its faces to be found

Revision ID: 0009_photo_rotation
Revises: 0008_cluster_suggestions
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_photo_rotation"
down_revision = "0008_cluster_suggestions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("rotation", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("rotation")
