"""views: short-lived view grants (which faces a user may look at, and why) and subjects' collection grants

Revision ID: 0006_views
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_views"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "view_grants",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),  # SHA-256 of the secret
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("audit_id", sa.Integer, nullable=False),  # the audit record of the search/view that issued it
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("case_ref", sa.String(200), nullable=False),
        sa.Column("face_ids", sa.Text, nullable=False),  # JSON list of collection face ids
        sa.Column("subject_face_ids", sa.Text, nullable=False),  # JSON list of enrolled (subject) face ids
        sa.Column("expires_at", sa.DateTime, nullable=False, index=True),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "subject_collections",
        # a subject made from a collection's faces carries that collection's grant
        sa.Column("subject_id", sa.Integer, sa.ForeignKey("subjects.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("collection_id", sa.Integer, sa.ForeignKey("collections.id", ondelete="CASCADE"),
                  primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("subject_collections")
    op.drop_table("view_grants")
