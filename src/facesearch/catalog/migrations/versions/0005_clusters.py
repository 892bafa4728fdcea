"""clusters: unknown faces grouped per collection, with a person's corrections pinned

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clusters",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("collection_id", sa.Integer, sa.ForeignKey("collections.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("name", sa.String(200), nullable=True),
        # "name -> becomes a subject": the subject the cluster was turned into
        sa.Column("subject_id", sa.Integer, sa.ForeignKey("subjects.id", ondelete="SET NULL"), nullable=True,
                  index=True),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        # a cluster id must never name a different group after a merge or a removal
        sqlite_autoincrement=True,
    )
    op.create_table(
        "cluster_faces",
        # one row per face at most; erasing the face removes it
        sa.Column("face_id", sa.Integer, sa.ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("cluster_id", sa.Integer, sa.ForeignKey("clusters.id", ondelete="CASCADE"), nullable=True,
                  index=True),
        sa.Column("pinned", sa.Boolean, nullable=False),
        sa.Column("assigned_by", sa.String(100), nullable=False),
        sa.Column("assigned_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "cluster_state",
        sa.Column("collection_id", sa.Integer, sa.ForeignKey("collections.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("last_face_id", sa.Integer, nullable=False),
        sa.Column("faces_processed", sa.Integer, nullable=False),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("ran_by", sa.String(100), nullable=False),
        sa.Column("ran_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    for table in ("cluster_state", "cluster_faces", "clusters"):
        op.drop_table(table)
