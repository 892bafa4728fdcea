"""job heartbeat: when the process running a job last said it was alive, so that any process
can report a job whose process died as failed instead of running forever

Revision ID: 0011_job_heartbeat
Revises: 0010_photo_rotation
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_job_heartbeat"
down_revision = "0010_photo_rotation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("heartbeat", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("heartbeat")
