"""Looking at faces: every look is tied to an audited purpose, and refused looks are counted.

A face's crop, its photo and its details are shown only under a *view grant*: a short-lived
secret, stored server-side as a hash, bound to one user, to the audit record of the search
(or subject / cluster view, or explicit ``view_grant`` request) that issued it, with that
record's purpose and case, and to the face ids that record lists. The URLs the API hands out
carry the grant (``?view=...``); a request without one, with someone else's, an expired one,
or for a face the grant does not name, is refused.

Why a grant and not a purpose in the URL: a GET can be made by any ``<img>`` on any page, so
a purpose typed into a URL could be chosen by an attacker. A grant can only come from a
request that the user's own page made (a POST with the CSRF token) and that was audited
first; a GET can then only *use* it, under the purpose already recorded.

Refused looks are written to the audit log aggregated: one ``view_refused`` record at the
first refusal of a user in a minute (so the attempt is visible at once), and one record with
the count of the rest of that minute when the minute is over (:meth:`RefusalTally.flush`,
called on the next refusal after it, every minute by the server, and at shutdown). Counting
ids therefore costs an attacker at most two records a minute in the log, and no flood.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from facesearch.catalog import Catalog
from facesearch.catalog.schema import utcnow
from facesearch.governance.accounts import UserInfo
from facesearch.governance.audit import AuditLog
from facesearch.governance.schema import ViewGrant

#: how long a search's results may be looked at without searching again
VIEW_GRANT_TTL = timedelta(hours=1)
#: refusals are counted per user over windows of this many seconds
REFUSAL_WINDOW_S = 60
#: face ids kept as a sample in a refusal record (the count says how many there were)
REFUSAL_SAMPLE = 10


class ViewRefused(Exception):
    """No valid view grant for this look (internal: the service turns it into PermissionDenied)."""


@dataclass(frozen=True)
class Grant:
    id: int
    user_id: int
    audit_id: int
    purpose: str
    case_ref: str
    face_ids: frozenset[int]
    subject_face_ids: frozenset[int]
    expires_at: datetime


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ViewGrants:
    """Issue and check view grants (the table ``view_grants``)."""

    def __init__(self, catalog: Catalog, ttl: timedelta = VIEW_GRANT_TTL) -> None:
        self.catalog = catalog
        self.ttl = ttl

    def issue(self, actor: UserInfo, audit_id: int, *, purpose: str, case_ref: str, face_ids=(),
              subject_face_ids=()) -> str:
        """A new grant for these faces, bound to the actor and the audit record ``audit_id``."""
        token = "fv_" + secrets.token_urlsafe(24)
        now = utcnow()
        with self.catalog.session() as s:
            s.execute(delete(ViewGrant).where(ViewGrant.expires_at < now))  # expired grants are useless
            s.add(ViewGrant(token_hash=_hash(token), user_id=actor.id, audit_id=audit_id, purpose=purpose,
                            case_ref=case_ref, face_ids=json.dumps(sorted({int(f) for f in face_ids})),
                            subject_face_ids=json.dumps(sorted({int(f) for f in subject_face_ids})),
                            expires_at=now + self.ttl))
            s.commit()
        return token

    def find(self, actor: UserInfo, token: str | None) -> Grant | None:
        """The actor's unexpired grant with this secret, or None (someone else's counts as none)."""
        if not token or len(token) > 100:
            return None
        with self.catalog.session() as s:
            row = s.scalar(select(ViewGrant).where(ViewGrant.token_hash == _hash(token)))
            if row is None or row.user_id != actor.id or row.expires_at < utcnow():
                return None
            return Grant(row.id, row.user_id, row.audit_id, row.purpose, row.case_ref,
                         frozenset(json.loads(row.face_ids)), frozenset(json.loads(row.subject_face_ids)),
                         row.expires_at)

    def check(self, actor: UserInfo, token: str | None, *, face_id: int | None = None,
              subject_face_id: int | None = None) -> Grant:
        grant = self.find(actor, token)
        if grant is None:
            raise ViewRefused("no valid view grant: open faces from a search, a subject or a cluster "
                              "(or ask for a view grant with a purpose and a case reference)")
        if face_id is not None and face_id not in grant.face_ids:
            raise ViewRefused(f"face {face_id} is not among the faces this view grant covers")
        if subject_face_id is not None and subject_face_id not in grant.subject_face_ids:
            raise ViewRefused(f"enrolled face {subject_face_id} is not among the faces this view grant covers")
        return grant


@dataclass
class _Window:
    start: float
    count: int = 0  # refusals not yet written
    sample: list = field(default_factory=list)
    first_written: bool = False


class RefusalTally:
    """Refused looks, written to the audit log aggregated per user and minute (see the module doc)."""

    def __init__(self, audit: AuditLog, window_s: float = REFUSAL_WINDOW_S, clock=time.monotonic) -> None:
        self.audit = audit
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._open: dict[str, _Window] = {}

    def refused(self, username: str, kind: str, target: int) -> None:
        now = self.clock()
        self.flush(older_than=now)
        with self._lock:
            window = self._open.get(username)
            if window is None:
                window = self._open[username] = _Window(now)
            first = not window.first_written
            if first:
                window.first_written = True
            else:
                window.count += 1
                if len(window.sample) < REFUSAL_SAMPLE:
                    window.sample.append([kind, target])
        if first:  # the first refusal of the window is on record at once
            self.audit.append(username, "view_refused", {"count": 1, "sample": [[kind, target]],
                                                         "window_s": self.window_s, "first_of_window": True})

    def flush(self, older_than: float | None = None) -> int:
        """Write the counts of windows that are over (all windows when ``older_than`` is None)."""
        with self._lock:
            done = [(user, w) for user, w in self._open.items()
                    if older_than is None or older_than - w.start >= self.window_s]
            for user, _ in done:
                del self._open[user]
        for user, window in done:
            if window.count:
                self.audit.append(user, "view_refused", {"count": window.count, "sample": window.sample,
                                                         "window_s": self.window_s, "first_of_window": False})
        return len(done)
