"""Catalog tables (SQLAlchemy 2 ORM). The catalog is the source of truth: the vector index
is a cache of the ``faces.embedding`` column and can always be rebuilt from it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Collection(Base):
    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    legal_basis: Mapped[str] = mapped_column(Text, default="")
    retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    keep_thumbnails: Mapped[bool] = mapped_column(Boolean, default=True)
    pack: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    images: Mapped[list[ImageRecord]] = relationship(back_populates="collection", passive_deletes=True)


class ImageRecord(Base):
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("collection_id", "sha256", name="uq_image_content"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)  # path or URI the operator gave us
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    face_count: Mapped[int] = mapped_column(Integer, default=0)
    ingested_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    media: Mapped[str] = mapped_column(String(10), default="image", server_default="image")  # image | video
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)  # videos only
    # degrees clockwise the decoded file was turned to show a face (a sideways scan without EXIF);
    # width, height and every face box are of the turned, upright picture
    rotation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    collection: Mapped[Collection] = relationship(back_populates="images")
    faces: Mapped[list[FaceRecord]] = relationship(back_populates="image", passive_deletes=True)


class FaceRecord(Base):
    __tablename__ = "faces"
    __table_args__ = {"sqlite_autoincrement": True}  # ids are never reused after an erasure

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # == vector id in the index
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    face_index: Mapped[int] = mapped_column(Integer)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    landmarks: Mapped[str] = mapped_column(Text)  # JSON [[x, y] x 5]
    det_score: Mapped[float] = mapped_column(Float)
    quality: Mapped[float] = mapped_column(Float)
    quality_issues: Mapped[str] = mapped_column(Text, default="")
    pack: Mapped[str] = mapped_column(String(200))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32 little-endian
    thumbnail: Mapped[str | None] = mapped_column(Text, nullable=True)  # relative to home
    # Faces from a video: when, in which face track, and the stored frame (relative, like thumbnails).
    timestamp_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    track_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    track_start_s: Mapped[float | None] = mapped_column(Float, nullable=True)  # when the person is on screen
    track_end_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    frame: Mapped[str | None] = mapped_column(Text, nullable=True)

    image: Mapped[ImageRecord] = relationship(back_populates="faces")


class IngestEvent(Base):
    """The ingest journal: one row per file looked at, so a run can be audited and resumed."""

    __tablename__ = "ingest_journal"
    __table_args__ = (Index("ix_journal_run", "run_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64))
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(20))  # indexed | duplicate | skipped | failed
    reason: Mapped[str] = mapped_column(Text, default="")
    faces: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)



class ErasedContent(Base):
    """What was erased, as a keyed hash only (HMAC-SHA256 of the file's SHA-256 under a key kept
    outside the catalog): lets ingest refuse the same bytes again without naming them."""

    __tablename__ = "erased_content"

    keyed_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

# -- subjects and galleries (migration 0003; store in facesearch.catalog.subjects) --------------------


class Gallery(Base):
    __tablename__ = "galleries"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    pack: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Subject(Base):
    __tablename__ = "subjects"
    __table_args__ = (UniqueConstraint("gallery_id", "label", name="uq_subject_label"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gallery_id: Mapped[int] = mapped_column(ForeignKey("galleries.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(200))
    attributes: Mapped[str] = mapped_column(Text, default="{}")  # JSON object of strings; never logged
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class SubjectFace(Base):
    __tablename__ = "subject_faces"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"), index=True)
    face_id: Mapped[int | None] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), nullable=True,
                                                index=True)
    source: Mapped[str] = mapped_column(Text)  # file name or path given at enrolment, or "face N"
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    face_index: Mapped[int] = mapped_column(Integer)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    quality: Mapped[float] = mapped_column(Float)
    quality_issues: Mapped[str] = mapped_column(Text, default="")
    pack: Mapped[str] = mapped_column(String(200))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    thumbnail: Mapped[str | None] = mapped_column(Text, nullable=True)  # in the subject thumbnail store
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class MatchDecision(Base):
    __tablename__ = "match_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"), index=True)
    face_id: Mapped[int | None] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), nullable=True,
                                                index=True)
    other_subject_id: Mapped[int | None] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"),
                                                         nullable=True, index=True)
    decision: Mapped[str] = mapped_column(String(10))  # confirm | reject
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    decided_by: Mapped[str] = mapped_column(String(100))
    note: Mapped[str] = mapped_column(Text, default="")
    decided_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# -- clusters of unknown faces (migration 0005; store in facesearch.catalog.clusters) ---------------


class Cluster(Base):
    """One group of a collection's faces believed to be one (unknown) person."""

    __tablename__ = "clusters"
    __table_args__ = {"sqlite_autoincrement": True}  # a cluster id never names another group later

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)  # typed by a person; never logged
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("subjects.id", ondelete="SET NULL"), nullable=True,
                                                   index=True)
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ClusterFace(Base):
    """A face's place: in a cluster, or (``cluster_id`` NULL, pinned) kept out of every cluster by a person."""

    __tablename__ = "cluster_faces"

    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True)
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), nullable=True,
                                                   index=True)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)  # set by a person: automatic runs never change it
    assigned_by: Mapped[str] = mapped_column(String(100), default="")
    assigned_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ClusterRunState(Base):
    """Where clustering of a collection stands: what the next incremental run starts from."""

    __tablename__ = "cluster_state"

    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)
    params: Mapped[str] = mapped_column(Text, default="{}")  # JSON of the resolved ClusterParams
    last_face_id: Mapped[int] = mapped_column(Integer, default=0)  # faces up to this id have been placed
    faces_processed: Mapped[int] = mapped_column(Integer, default=0)
    mode: Mapped[str] = mapped_column(String(20), default="")  # full | incremental: of the last run
    ran_by: Mapped[str] = mapped_column(String(100), default="")
    ran_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ClusterSuggestionDecision(Base):
    """A person's answer to a clustering suggestion (migration 0008_cluster_suggestions): a rejected
    one is not offered again. Merge: ``cluster_a`` < ``cluster_b``; attach: ``face_id`` -> ``cluster_b``."""

    __tablename__ = "cluster_suggestion_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    face_id: Mapped[int | None] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), nullable=True, index=True)
    cluster_a: Mapped[int | None] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), nullable=True)
    cluster_b: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"))
    decision: Mapped[str] = mapped_column(String(10))
    score: Mapped[float] = mapped_column(Float)
    decided_by: Mapped[str] = mapped_column(String(100), default="")
    decided_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
