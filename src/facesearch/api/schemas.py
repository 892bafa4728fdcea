"""Pydantic models at the API boundary (what clients send and receive).

A response that shows an internal record as it is is derived from that record's dataclass
(:func:`from_dataclass`), so a field added to the record is not copied by hand here.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, Field, create_model

from facesearch.catalog.store import MAX_RETENTION_DAYS, MIN_RETENTION_DAYS, CollectionInfo
from facesearch.governance.accounts import ApiKeyInfo, UserInfo
from facesearch.governance.audit import AuditEntry
from facesearch.governance.service import RetentionReport
from facesearch.search.verify import VerifyResult
from facesearch.services.engine import ErasureReport


def from_dataclass(cls: type, name: str, *, base: type[BaseModel] = BaseModel,
                   **extra: tuple[Any, Any]) -> type[BaseModel]:
    """A response model with the fields (names, types, defaults) of dataclass ``cls``, plus ``extra``
    (name -> (type, default) as for :func:`pydantic.create_model`)."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = Field(default_factory=f.default_factory)
        else:
            default = ...
        fields[f.name] = (hints[f.name], default)
    return create_model(name, __base__=base, __module__=__name__, **fields, **extra)

#: Usernames are at most 100 characters (the users table); passwords at most this many.
MAX_USERNAME_CHARS = 100
MAX_PASSWORD_CHARS = 1024

#: Catalog row ids are 64-bit signed integers (SQLite, PostgreSQL). An id outside that range names
#: no row, and sent to the database it raised OverflowError: a 500 instead of a 422. One bound for
#: every id a client sends, in a body (RowId) or in a path (RowIdPath).
MIN_ROW_ID, MAX_ROW_ID = -(2**63), 2**63 - 1
RowId = Annotated[int, Field(ge=MIN_ROW_ID, le=MAX_ROW_ID)]
RowIdPath = Annotated[int, Path(ge=MIN_ROW_ID, le=MAX_ROW_ID)]


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=MAX_USERNAME_CHARS)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


class LoginResponse(BaseModel):
    username: str
    role: str
    csrf_token: str = Field(description="send back as the X-CSRF-Token header on every POST/DELETE")


class Me(BaseModel):
    username: str
    role: str
    collections: list[str]
    csrf_token: str | None = None


class NewUser(BaseModel):
    username: str = Field(min_length=1, max_length=MAX_USERNAME_CHARS)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)
    role: str = Field(pattern="^(admin|investigator|auditor)$")


UserOut = from_dataclass(UserInfo, "UserOut", grants=(list[str], Field(default_factory=list,
                         description="collections granted (investigators)")))



class ApiKeyOut(BaseModel):
    api_key: str = Field(description="shown once; store it safely")
    id: int | None = None


class NewApiKey(BaseModel):
    label: str = Field(default="", max_length=200)


ApiKeyInfoOut = from_dataclass(ApiKeyInfo, "ApiKeyInfoOut")



class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)
    new_password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


class PasswordReset(BaseModel):
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)


class RoleChange(BaseModel):
    role: str = Field(pattern="^(admin|investigator|auditor)$")


class NewCollection(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[\w.\- ]+$")
    legal_basis: str = Field(min_length=1, description="why these photos may be processed")
    retention_days: int | None = Field(default=None, ge=MIN_RETENTION_DAYS, le=MAX_RETENTION_DAYS,
                                       description="days a photo is kept (1..36500); none: until erased")
    keep_thumbnails: bool = True


CollectionOut = from_dataclass(CollectionInfo, "CollectionOut")



class GrantRequest(BaseModel):
    username: str = Field(min_length=1, max_length=MAX_USERNAME_CHARS)


class FolderIngest(BaseModel):
    path: str = Field(description="a folder on the server")
    allow_erased: bool = Field(False, description="index content erased earlier (refused by default; audited)")


class JobOut(BaseModel):
    id: str
    collection: str
    kind: str
    state: str
    done: int
    total: int
    images_indexed: int
    faces_indexed: int
    failed: list[list[str]]
    skipped: list[list[str]]
    error: str
    erased_earlier: int = 0  # files refused: their content was erased earlier


class CandidateOut(BaseModel):
    rank: int
    face_id: int
    similarity: float
    above_threshold: bool
    false_match_rate: float | None
    false_match_extrapolated: bool
    false_match_fpir: float | None
    false_match_words: str | None
    collection: str
    image_id: int
    box: tuple[float, float, float, float]
    quality: float
    thumbnail_url: str | None
    photo_url: str
    media: str = "image"  # image | video
    timestamp_s: float | None = None  # video: when the face appears, seconds from the start
    track_id: int | None = None
    track_span: tuple[float, float] | None = None  # video: when this person's track is on screen
    track_faces: list[int] = []  # video: every face of the track, time order (this one is its best)
    track_hits: int = 0  # video: how many of the track's faces scored among the hits (folded into this one)


class ProbeOut(BaseModel):
    faces_in_image: int
    chosen: int
    rule: str
    box: tuple[float, float, float, float]
    quality: float
    quality_issues: list[str]
    usable: bool
    rotation: int = 0  # degrees clockwise the probe was turned to find its faces; boxes fit it as sent


class SearchOut(BaseModel):
    verdict: str
    confident_match: bool
    review_notice: str = "Candidate leads only: every result needs human review; a score is not an identification."
    probe: ProbeOut | None
    probe_faces: list[tuple[float, float, float, float]] = []
    collections: list[str]
    faces_searched: int
    threshold: float
    threshold_rule: str
    candidates: list[CandidateOut]
    warnings: list[str]
    suppressed_note: str = "faces of people who opted out are never shown"
    include_weaker: bool = False  # whether the request asked for candidates below the threshold
    weaker_withheld: int = 0  # candidates below the threshold left out (ask with include_weaker=true)
    view_token: str | None = None  # the view grant the candidates' URLs carry (expires after an hour)


VerifyOut = from_dataclass(VerifyResult, "VerifyOut")


class EraseRequest(BaseModel):
    faces: list[RowId] | None = None
    images: list[RowId] | None = None
    collection: str | None = None
    reason: str = ""


EraseOut = from_dataclass(ErasureReport, "EraseOut")



class RetentionRequest(BaseModel):
    apply: bool = False  # False: only list what is past its retention period


RetentionOut = from_dataclass(RetentionReport, "RetentionOut")



class FaceOut(BaseModel):
    face_id: int
    image_id: int
    collection: str
    box: tuple[float, float, float, float]
    quality: float
    quality_issues: list[str]
    thumbnail_url: str | None
    photo_url: str  # for a video face: the stored frame it was found in
    image_faces: list[dict]
    media: str = "image"  # image | video
    timestamp_s: float | None = None  # video: seconds from the start
    track_id: int | None = None
    track_span: tuple[float, float] | None = None
    source_name: str | None = None  # the indexed file's name; None for an upload (its name is not kept)
    captured_at: str | None = None  # from the photo's EXIF, when it has one


class ViewRequest(BaseModel):
    face_ids: list[RowId] = Field(min_length=1, max_length=200)
    purpose: str = Field(min_length=1, max_length=500)
    case_ref: str = Field(min_length=1, max_length=200)


class ViewGrantOut(BaseModel):
    view_token: str
    faces: dict[int, dict[str, str | None]]  # face id -> {"details_url", "thumbnail_url", "photo_url"}


AuditOut = from_dataclass(AuditEntry, "AuditOut")



class AuditCheckOut(BaseModel):
    ok: bool
    records: int
    problems: list[tuple[int, str]]
    checkpoints: int = Field(0, description="signed checkpoints checked (home and $FACESEARCH_AUDIT_EXPORT)")
    notes: list[str] = Field(default_factory=list)
