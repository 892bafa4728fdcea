"""video: faces found in video files carry their time, track and a stored frame

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("media", sa.String(10), nullable=False, server_default="image"))
        batch.add_column(sa.Column("duration_s", sa.Float, nullable=True))
    with op.batch_alter_table("faces") as batch:
        batch.add_column(sa.Column("timestamp_s", sa.Float, nullable=True))
        batch.add_column(sa.Column("track_id", sa.Integer, nullable=True))
        batch.add_column(sa.Column("track_start_s", sa.Float, nullable=True))
        batch.add_column(sa.Column("track_end_s", sa.Float, nullable=True))
        batch.add_column(sa.Column("frame", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("faces") as batch:
        for column in ("frame", "track_end_s", "track_start_s", "track_id", "timestamp_s"):
            batch.drop_column(column)
    with op.batch_alter_table("images") as batch:
        batch.drop_column("duration_s")
        batch.drop_column("media")
