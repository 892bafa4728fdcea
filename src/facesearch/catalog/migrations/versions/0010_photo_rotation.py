"""photo rotation: how far a sideways scan (no EXIF) was turned for its faces to be found

Revision ID: 0010_photo_rotation
Revises: 0009_shared_server_state
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_photo_rotation"
down_revision = "0009_shared_server_state"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("rotation", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("rotation")
