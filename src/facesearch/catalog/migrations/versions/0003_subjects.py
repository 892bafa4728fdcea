"""subjects: galleries (registries), subjects with enrolled faces, match decisions

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "galleries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("pack", sa.String(200), nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "subjects",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("gallery_id", sa.Integer, sa.ForeignKey("galleries.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("label", sa.String(200), nullable=False),
        # free-form attributes (case id, date last seen, family contact): catalog only, never logged
        sa.Column("attributes", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("gallery_id", "label", name="uq_subject_label"),
        # a subject id must never name a different person after a removal
        sqlite_autoincrement=True,
    )
    op.create_table(
        "subject_faces",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("subject_id", sa.Integer, sa.ForeignKey("subjects.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        # enrolled from a face already in a collection: goes when that face is erased
        sa.Column("face_id", sa.Integer, sa.ForeignKey("faces.id", ondelete="CASCADE"), nullable=True, index=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("face_index", sa.Integer, nullable=False),
        sa.Column("x1", sa.Float, nullable=False),
        sa.Column("y1", sa.Float, nullable=False),
        sa.Column("x2", sa.Float, nullable=False),
        sa.Column("y2", sa.Float, nullable=False),
        sa.Column("quality", sa.Float, nullable=False),
        sa.Column("quality_issues", sa.Text, nullable=False),
        sa.Column("pack", sa.String(200), nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("thumbnail", sa.Text, nullable=True),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "match_decisions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("subject_id", sa.Integer, sa.ForeignKey("subjects.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("face_id", sa.Integer, sa.ForeignKey("faces.id", ondelete="CASCADE"), nullable=True, index=True),
        sa.Column("other_subject_id", sa.Integer, sa.ForeignKey("subjects.id", ondelete="CASCADE"),
                  nullable=True, index=True),
        sa.Column("decision", sa.String(10), nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("decided_by", sa.String(100), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("decided_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    for table in ("match_decisions", "subject_faces", "subjects", "galleries"):
        op.drop_table(table)
