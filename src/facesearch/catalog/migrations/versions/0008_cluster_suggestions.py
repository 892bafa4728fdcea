"""cluster suggestions: a person's answers to "these two clusters may be one person" and
"this unassigned face may belong to cluster N", so a rejected suggestion is not offered again

Revision ID: 0008_cluster_suggestions
Revises: 0007_erasure
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_cluster_suggestions"
down_revision = "0007_erasure"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_suggestion_decisions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("collection_id", sa.Integer, sa.ForeignKey("collections.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("kind", sa.String(10), nullable=False),  # merge | attach
        # merge: the two clusters (a < b); attach: the face and the cluster. Erasing either drops the answer.
        sa.Column("face_id", sa.Integer, sa.ForeignKey("faces.id", ondelete="CASCADE"), nullable=True, index=True),
        sa.Column("cluster_a", sa.Integer, sa.ForeignKey("clusters.id", ondelete="CASCADE"), nullable=True),
        sa.Column("cluster_b", sa.Integer, sa.ForeignKey("clusters.id", ondelete="CASCADE"), nullable=False),
        sa.Column("decision", sa.String(10), nullable=False),  # accepted | rejected
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("decided_by", sa.String(100), nullable=False),
        sa.Column("decided_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cluster_suggestion_decisions")
