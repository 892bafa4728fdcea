"""The audit log: append-only, hash-chained records of who did what, when and why.

Each record's hash covers its content and the previous record's hash, so editing,
inserting or deleting any record breaks the chain from that point on, and
:meth:`AuditLog.verify` says where. ``prev_hash`` is unique: two writers racing to
append after the same record cannot fork the chain (the loser retries).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from facesearch.catalog import Catalog
from facesearch.governance.schema import AuditHead, AuditRecord

GENESIS = "0" * 64
_append_lock = threading.Lock()


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
        details_json = canonical(details or {})
        with _append_lock:
            for _attempt in range(20):
                with self.catalog.session() as s:
                    last = s.scalar(select(AuditRecord).order_by(AuditRecord.id.desc()).limit(1))
                    prev = last.hash if last else GENESIS
                    at = datetime.now(UTC).isoformat(timespec="microseconds")
                    row = AuditRecord(at=at, actor=actor, action=action, purpose=purpose, case_ref=case_ref,
                                      details=details_json, prev_hash=prev,
                                      hash=record_hash(prev, at, actor, action, purpose, case_ref, details_json))
                    s.add(row)
                    try:
                        s.flush()
                        head = s.get(AuditHead, 1)
                        if head is None:
                            s.add(AuditHead(id=1, last_id=row.id, last_hash=row.hash))
                        else:
                            head.last_id, head.last_hash = row.id, row.hash
                        s.commit()
                        return _entry(row)
                    except IntegrityError:
                        s.rollback()  # another process appended after the same record: retry
            raise RuntimeError("could not append to the audit log (persistent contention)")

    def entries(self, *, actor: str | None = None, action: str | None = None, case_ref: str | None = None,
                since: str | None = None, until: str | None = None, limit: int | None = None,
                newest_first: bool = False) -> list[AuditEntry]:
        query = select(AuditRecord)
        if actor:
            query = query.where(AuditRecord.actor == actor)
        if action:
            query = query.where(AuditRecord.action == action)
        if case_ref:
            query = query.where(AuditRecord.case_ref == case_ref)
        if since:
            query = query.where(AuditRecord.at >= since)
        if until:
            query = query.where(AuditRecord.at <= until)
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
