"""Governance tables: users, API keys, sessions, collection grants, the audit chain, opt-outs.

They live in the catalog's database (one transaction can cover a search and its audit
record) and are created by the same Alembic migration chain.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Integer, LargeBinary, MetaData, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from facesearch.catalog.schema import Base, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 of the secret
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class WebSession(Base):
    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class Grant(Base):
    __tablename__ = "grants"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)


class AuditRecord(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[str] = mapped_column(String(40))  # ISO-8601 UTC, part of the hashed content
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(40), index=True)
    purpose: Mapped[str] = mapped_column(Text, default="")
    case_ref: Mapped[str] = mapped_column(String(200), default="")
    details: Mapped[str] = mapped_column(Text, default="{}")  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's newest record, updated in the same transaction: catches a deleted tail."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))


class OptOut(Base):
    __tablename__ = "optouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    pack: Mapped[str] = mapped_column(String(200))
    reference: Mapped[str] = mapped_column(Text, default="")  # request reference, never a name or photo
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ViewGrant(Base):
    """Which faces a user may look at, until when, and the audited search or view that allowed it."""

    __tablename__ = "view_grants"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    audit_id: Mapped[int] = mapped_column(Integer)
    purpose: Mapped[str] = mapped_column(Text)
    case_ref: Mapped[str] = mapped_column(String(200))
    face_ids: Mapped[str] = mapped_column(Text)  # JSON list
    subject_face_ids: Mapped[str] = mapped_column(Text)  # JSON list
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class SubjectCollection(Base):
    """A subject made from a collection's faces (or a cluster of it) carries that collection's grant."""

    __tablename__ = "subject_collections"

    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"), primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)


# -- state shared by every API process of one home (see facesearch.governance.shared) ------------------


class LoginFailure(Base):
    """One failed login, counted under a throttle key (a username-and-client pair, or a client)."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(300), index=True)
    at: Mapped[float] = mapped_column(Float, index=True)  # seconds since the epoch: every process's clock


class LoginBlock(Base):
    """A throttle key refused until ``until``; ``reported`` once its refusal went on record."""

    __tablename__ = "login_blocks"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    until: Mapped[float] = mapped_column(Float, index=True)
    reported: Mapped[bool] = mapped_column(Boolean, default=False)


class JobRecord(Base):
    """A background ingest job, visible to every API process (the one running it writes it)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    collection: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(10))
    owner: Mapped[str] = mapped_column(String(200), default="")  # host:pid:nonce of the process running it
    progress: Mapped[str] = mapped_column(Text, default="{}")  # JSON: counts, failed/skipped lists, error
    started: Mapped[float] = mapped_column(Float, index=True)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)
    # when the owner last said it was alive (NULL: a row from before 0011; its start time stands in)
    heartbeat: Mapped[float | None] = mapped_column(Float, nullable=True)


def catalog_schema() -> MetaData:
    """Every table of the catalog database: the catalog's models and these (the highest layer with
    tables). A new catalog is created from it in one step (:mod:`facesearch.catalog.migrate`);
    ``tests/test_fresh_catalog.py`` checks that it is what the migrations build."""
    return Base.metadata
