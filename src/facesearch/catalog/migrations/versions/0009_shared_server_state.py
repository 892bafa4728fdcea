"""shared server state: login throttling and ingest jobs in the database, so that every API
process of one home (``serve --workers N`` or several servers) sees the same

Revision ID: 0009_shared_server_state
Revises: 0008_cluster_suggestions
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_shared_server_state"
down_revision = "0008_cluster_suggestions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(300), nullable=False, index=True),
        sa.Column("at", sa.Float, nullable=False, index=True),
    )
    op.create_table(
        "login_blocks",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("until", sa.Float, nullable=False, index=True),
        sa.Column("reported", sa.Boolean, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("collection", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("progress", sa.Text, nullable=False),
        sa.Column("started", sa.Float, nullable=False, index=True),
        sa.Column("finished", sa.Float, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("login_blocks")
    op.drop_table("login_failures")
