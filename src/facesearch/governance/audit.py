"""The audit log: append-only, hash-chained records of who did what, when and why.

Each record's hash covers its content and the previous record's hash, so editing,
inserting or deleting any record breaks the chain from that point on, and
:meth:`AuditLog.verify` says where. ``prev_hash`` is unique: two writers racing to
append after the same record cannot fork the chain (the loser retries); and appends are serialized
by the database itself (a row lock on the head, see :meth:`AuditLog._lock_head`), so many
processes (``serve --workers N``) append without racing at all.

Ids are never reused: a new record takes the id after the chain head (``audit_head``), not after
the newest row, and chains to the head's hash, so deleting the newest record and then appending
leaves a gap that :meth:`AuditLog.verify` names. Someone who can write the database can still
rewrite the rows *and* the head consistently; signed checkpoints (:mod:`.checkpoints`) catch that.

Records are bounded: the actor, purpose and case reference are folded to a fixed length and the
details JSON is capped (:func:`bound_details`), so nobody can fill the log with one request.
"""

from __future__ import annotations

import hashlib
import json
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from facesearch.catalog import Catalog
from facesearch.governance.schema import AuditHead, AuditRecord

GENESIS = "0" * 64
_append_lock = threading.Lock()

#: Longest actor name kept as given (longer ones: folded, see :func:`bounded_text`).
MAX_ACTOR_CHARS = 64
MAX_CASE_REF_CHARS = 150
MAX_PURPOSE_CHARS = 2000
#: Longest string kept whole inside the details, and longest list.
MAX_DETAIL_STRING_CHARS = 1000
MAX_DETAIL_LIST_ITEMS = 10_000
#: Cap on the canonical details JSON of one record.
MAX_DETAILS_BYTES = 256 * 1024


def _digest16(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def bounded_text(text: str, limit: int = MAX_ACTOR_CHARS) -> str:
    """``text`` with control characters replaced by ``?`` and, when longer than ``limit``, cut to
    ``limit`` characters plus ``…#`` and a hash of the whole: still recognisable (the same input
    gives the same text), never unbounded attacker text."""
    text = str(text)
    if len(text) <= limit:
        return _clean(text)
    return f"{_clean(text[:limit])}…#{_digest16(text)}"  # at most limit + 18: fits the 100-char columns


def _clean(text: str) -> str:
    return "".join("?" if unicodedata.category(c).startswith("C") else c for c in text)


def fold(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its first ``limit`` characters (control
    characters as ``?``) and a marker with the full length and a hash of the whole."""
    if len(text) <= limit:
        return text
    return f"{_clean(text[:limit])}…[{len(text)} chars, sha256:{_digest16(text)}]"


def _fold_value(value, string_limit: int, list_limit: int):
    if isinstance(value, str):
        return fold(value, string_limit) if len(value) > string_limit else value
    if isinstance(value, dict):
        return {fold(str(k), 200): _fold_value(v, string_limit, list_limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_fold_value(v, string_limit, list_limit) for v in list(value)[:list_limit]]
        if len(value) > list_limit:
            items.append(f"…[{len(value)} items, sha256:{_digest16(canonical(list(value)))}]")
        return items
    return value


def bound_details(details: dict) -> str:
    """The canonical JSON of ``details``, at most ``MAX_DETAILS_BYTES``: long strings and lists are
    folded (a marker says how long they were, with a hash); if it is still too big, a summary
    (its keys, size and hash) stands in for it."""
    text = canonical(details)
    if len(text) <= MAX_DETAILS_BYTES and not _has_long_string(details):
        return text
    folded = canonical(_fold_value(details, MAX_DETAIL_STRING_CHARS, MAX_DETAIL_LIST_ITEMS))
    if len(folded.encode()) <= MAX_DETAILS_BYTES:
        return folded
    folded = canonical(_fold_value(details, 100, 100))
    if len(folded.encode()) <= MAX_DETAILS_BYTES:
        return folded
    return canonical({"details_folded": True, "bytes": len(text.encode()), "sha256": _digest16(text),
                      "keys": [fold(str(k), 100) for k in list(details)[:50]]})


def _has_long_string(value) -> bool:
    if isinstance(value, str):
        return len(value) > MAX_DETAIL_STRING_CHARS
    if isinstance(value, dict):
        return any(_has_long_string(k) or _has_long_string(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return len(value) > MAX_DETAIL_LIST_ITEMS or any(_has_long_string(v) for v in value)
    return False


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: str
    actor: str
    action: str
    purpose: str
    case_ref: str
    details: dict
    prev_hash: str
    hash: str

    def to_dict(self) -> dict:
        return {"id": self.id, "at": self.at, "actor": self.actor, "action": self.action, "purpose": self.purpose,
                "case_ref": self.case_ref, "details": self.details, "prev_hash": self.prev_hash, "hash": self.hash}


@dataclass
class ChainCheck:
    records: int
    problems: list[tuple[int, str]] = field(default_factory=list)  # (record id, what is wrong)
    checkpoints: int = 0  # signed checkpoints checked (see facesearch.governance.checkpoints)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "records": self.records, "problems": self.problems,
                "checkpoints": self.checkpoints, "notes": self.notes}

    @property
    def ok(self) -> bool:
        return not self.problems


def canonical(details: dict) -> str:
    return json.dumps(details, sort_keys=True, separators=(",", ":"), default=str)


def record_hash(prev_hash: str, at: str, actor: str, action: str, purpose: str, case_ref: str,
                details_json: str) -> str:
    content = json.dumps([prev_hash, at, actor, action, purpose, case_ref, details_json], separators=(",", ":"))
    return hashlib.sha256(content.encode()).hexdigest()


def _entry(row: AuditRecord) -> AuditEntry:
    return AuditEntry(row.id, row.at, row.actor, row.action, row.purpose, row.case_ref, json.loads(row.details),
                      row.prev_hash, row.hash)


class AuditLog:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def append(self, actor: str, action: str, details: dict | None = None, purpose: str = "",
               case_ref: str = "") -> AuditEntry:
        details_json = bound_details(details or {})
        actor, action = bounded_text(actor), bounded_text(action, 40)
        purpose, case_ref = fold(purpose or "", MAX_PURPOSE_CHARS), fold(case_ref or "", MAX_CASE_REF_CHARS)
        with _append_lock:
            for _attempt in range(20):
                with self.catalog.session() as s:
                    try:
                        head = self._lock_head(s)
                    except OperationalError:
                        s.rollback()  # SQLite: the write lock stayed busy past busy_timeout; try again
                        continue
                    last = s.scalar(select(AuditRecord).order_by(AuditRecord.id.desc()).limit(1))
                    # Chain to the head, not to the newest row: after the newest record was deleted
                    # the next one still takes a fresh id and points at the deleted one (a gap).
                    prev = head.last_hash if head else (last.hash if last else GENESIS)
                    next_id = max(head.last_id if head else 0, last.id if last else 0) + 1
                    at = datetime.now(UTC).isoformat(timespec="microseconds")
                    row = AuditRecord(id=next_id, at=at, actor=actor, action=action, purpose=purpose, case_ref=case_ref,
                                      details=details_json, prev_hash=prev,
                                      hash=record_hash(prev, at, actor, action, purpose, case_ref, details_json))
                    s.add(row)
                    try:
                        s.flush()
                        if head is None:
                            s.add(AuditHead(id=1, last_id=row.id, last_hash=row.hash))
                        else:
                            head.last_id, head.last_hash = row.id, row.hash
                        s.commit()
                        return _entry(row)
                    except (IntegrityError, OperationalError):
                        s.rollback()  # another process appended after the same record: retry
            raise RuntimeError("could not append to the audit log (persistent contention)")

    def _lock_head(self, s: Session) -> AuditHead | None:
        """Take the chain's write lock for this transaction and return the head: appends from every
        process are serialized by the database. PostgreSQL: a row lock on the head
        (``SELECT ... FOR UPDATE``; the first append, with no head yet, races on the unique
        ``prev_hash`` and the loser retries). SQLite: ``BEGIN IMMEDIATE`` takes the database's
        single write lock up front, so two processes never read the same head and then both write."""
        if self.catalog.engine.dialect.name == "sqlite":
            s.connection().exec_driver_sql("BEGIN IMMEDIATE")
            return s.get(AuditHead, 1)
        return s.scalar(select(AuditHead).where(AuditHead.id == 1).with_for_update())

    def entries(self, *, actor: str | None = None, action: str | None = None, case_ref: str | None = None,
                since: str | None = None, until: str | None = None, limit: int | None = None,
                newest_first: bool = False, purpose: str | None = None) -> list[AuditEntry]:
        """Records matching every filter given. ``since``/``until`` are ISO times compared with the
        records' UTC times; a bare date ``until`` takes in that whole day. ``purpose`` matches any
        purpose containing it, whatever the case (purposes are free text)."""
        query = select(AuditRecord)
        if actor:
            query = query.where(AuditRecord.actor == actor)
        if action:
            query = query.where(AuditRecord.action == action)
        if case_ref:
            query = query.where(AuditRecord.case_ref == case_ref)
        if purpose:
            query = query.where(AuditRecord.purpose.icontains(purpose, autoescape=True))
        if since:
            query = query.where(AuditRecord.at >= since)
        if until:
            query = query.where(_before_end_of(until))
        query = query.order_by(AuditRecord.id.desc() if newest_first else AuditRecord.id)
        if limit:
            query = query.limit(limit)
        with self.catalog.session() as s:
            return [_entry(r) for r in s.scalars(query)]

    def iter_all(self) -> Iterator[AuditRecord]:
        with self.catalog.session() as s:
            yield from s.execute(select(AuditRecord).order_by(AuditRecord.id)).scalars().yield_per(1000)

    def verify(self) -> ChainCheck:
        """Recompute the chain; every record that does not follow from its predecessor is named."""
        check = ChainCheck(0)
        prev_hash, prev_id = GENESIS, 0
        for row in self.iter_all():
            check.records += 1
            expected = record_hash(row.prev_hash, row.at, row.actor, row.action, row.purpose, row.case_ref,
                                   row.details)
            if row.hash != expected:
                check.problems.append((row.id, "content does not match its hash: the record was edited"))
            if row.prev_hash != prev_hash:
                if row.id != prev_id + 1:
                    check.problems.append((row.id, f"records {prev_id + 1}..{row.id - 1} are missing: deleted"))
                else:
                    check.problems.append((row.id, "does not follow the previous record: a record before it "
                                                   "was edited, inserted or deleted"))
            elif row.id != prev_id + 1:
                check.problems.append((row.id, f"record ids jump from {prev_id} to {row.id}"))
            prev_hash, prev_id = row.hash, row.id
        with self.catalog.session() as s:
            head = s.get(AuditHead, 1)
        if head is not None and (head.last_id != prev_id or head.last_hash != prev_hash):
            check.problems.append((head.last_id, f"the newest record should be {head.last_id}, found "
                                                 f"{prev_id}: records at the end were deleted or replaced"))
        elif head is None and check.records:
            check.problems.append((prev_id, "the chain head is missing"))
        return check


def _before_end_of(until: str):
    """``at <= until``; for a bare date, every time of that day (``"2026-12-01"`` sorts before them)."""
    try:
        day = date.fromisoformat(until) if len(until) == 10 else None
    except ValueError:
        day = None
    if day is None:
        return AuditRecord.at <= until
    return AuditRecord.at < (day + timedelta(days=1)).isoformat()
