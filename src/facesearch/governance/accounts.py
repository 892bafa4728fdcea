"""Users, roles, passwords (argon2), API keys, web sessions and collection grants."""

from __future__ import annotations

import getpass
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from facesearch.catalog import Catalog
from facesearch.catalog.schema import Collection, utcnow
from facesearch.errors import FacesearchError
from facesearch.governance.policy import ADMIN, AUDITOR, INVESTIGATOR, ROLES
from facesearch.governance.schema import ApiKey, Grant, User, WebSession

SESSION_HOURS = 12
MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()


class AccountError(FacesearchError):
    """A user-management request was refused."""


@dataclass(frozen=True)
class ApiKeyInfo:
    id: int
    username: str
    label: str
    created_at: str
    revoked: bool


@dataclass(frozen=True)
class UserInfo:
    id: int
    username: str
    role: str
    active: bool = True


def local_operator() -> UserInfo:
    """Whoever runs the CLI on a home can read its files anyway: they act as an admin, audited under
    ``local:<login>`` (searches still need a purpose and a case reference)."""
    return UserInfo(0, f"local:{getpass.getuser()}", ADMIN)


def local_auditor() -> UserInfo:
    """The CLI's audit commands: whoever can read the home's files can read its audit log, so they
    act as an auditor, recorded under the same ``local:<login>``."""
    return UserInfo(0, f"local:{getpass.getuser()}", AUDITOR)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(row: User) -> UserInfo:
    return UserInfo(row.id, row.username, row.role, row.active)


class Accounts:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # -- users ------------------------------------------------------------------------------------

    def add_user(self, username: str, password: str, role: str) -> UserInfo:
        if role not in ROLES:
            raise AccountError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise AccountError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
        if not username or not username.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise AccountError("username: letters, digits, '-', '_' and '.' only")
        with self.catalog.session() as s:
            row = User(username=username, password_hash=_hasher.hash(password), role=role, active=True)
            s.add(row)
            try:
                s.commit()
            except IntegrityError as exc:
                raise AccountError(f"user {username!r} already exists") from exc
            return _info(row)

    def users(self) -> list[UserInfo]:
        with self.catalog.session() as s:
            return [_info(u) for u in s.scalars(select(User).order_by(User.username))]

    def user(self, username: str) -> UserInfo:
        with self.catalog.session() as s:
            row = s.scalar(select(User).where(User.username == username))
            if row is None:
                raise AccountError(f"no user {username!r}")
            return _info(row)

    def count_admins(self) -> int:
        with self.catalog.session() as s:
            return len(list(s.scalars(select(User.id).where(User.role == ADMIN, User.active.is_(True)))))

    def set_active(self, username: str, active: bool) -> UserInfo:
        with self.catalog.session() as s:
            row = s.scalar(select(User).where(User.username == username))
            if row is None:
                raise AccountError(f"no user {username!r}")
            row.active = active
            if not active:
                s.execute(delete(WebSession).where(WebSession.user_id == row.id))
            s.commit()
            return _info(row)

    def set_password(self, username: str, password: str, *, end_sessions: bool = False) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise AccountError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
        with self.catalog.session() as s:
            row = s.scalar(select(User).where(User.username == username))
            if row is None:
                raise AccountError(f"no user {username!r}")
            row.password_hash = _hasher.hash(password)
            if end_sessions:  # whoever held a session with the old password is logged out
                s.execute(delete(WebSession).where(WebSession.user_id == row.id))
            s.commit()

    def set_role(self, username: str, role: str) -> UserInfo:
        """Change a role; grants only mean something to investigators, so leaving that role drops them."""
        if role not in ROLES:
            raise AccountError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
        with self.catalog.session() as s:
            row = s.scalar(select(User).where(User.username == username))
            if row is None:
                raise AccountError(f"no user {username!r}")
            if row.role == INVESTIGATOR and role != INVESTIGATOR:
                s.execute(delete(Grant).where(Grant.user_id == row.id))
            row.role = role
            s.commit()
            return _info(row)

    def grants_of(self, username: str) -> list[str]:
        """The collections granted to this user (explicit grants only)."""
        user = self.user(username)
        with self.catalog.session() as s:
            return list(s.scalars(select(Collection.name).join(Grant, Grant.collection_id == Collection.id)
                                  .where(Grant.user_id == user.id).order_by(Collection.name)))

    def check_password(self, username: str, password: str) -> UserInfo | None:
        with self.catalog.session() as s:
            row = s.scalar(select(User).where(User.username == username))
            if row is None:
                _hasher.hash(password)  # same cost whether or not the user exists
                return None
            try:
                _hasher.verify(row.password_hash, password)
            except (VerificationError, InvalidHashError):
                return None
            return _info(row) if row.active else None

    # -- API keys and sessions ---------------------------------------------------------------------

    def create_api_key(self, username: str, label: str = "") -> str:
        return self.issue_api_key(username, label)[1]

    def issue_api_key(self, username: str, label: str = "") -> tuple[int, str]:
        """(key id, secret): the secret is shown once; only its SHA-256 is kept."""
        user = self.user(username)
        secret = "fsk_" + secrets.token_urlsafe(32)
        with self.catalog.session() as s:
            row = ApiKey(user_id=user.id, key_hash=_digest(secret), label=label[:200])
            s.add(row)
            s.commit()
            return row.id, secret

    def api_keys(self, username: str | None = None) -> list[ApiKeyInfo]:
        query = select(ApiKey, User.username).join(User, User.id == ApiKey.user_id).order_by(ApiKey.id)
        if username is not None:
            query = query.where(User.username == self.user(username).username)
        with self.catalog.session() as s:
            return [ApiKeyInfo(k.id, name, k.label, k.created_at.isoformat(timespec="seconds"), k.revoked)
                    for k, name in s.execute(query)]

    def revoke_api_key(self, key_id: int) -> ApiKeyInfo:
        with self.catalog.session() as s:
            found = s.execute(select(ApiKey, User.username).join(User, User.id == ApiKey.user_id)
                              .where(ApiKey.id == key_id)).first()
            if found is None:
                raise AccountError(f"no API key {key_id}")
            key, name = found
            key.revoked = True
            s.commit()
            return ApiKeyInfo(key.id, name, key.label, key.created_at.isoformat(timespec="seconds"), True)

    def user_for_api_key(self, secret: str) -> UserInfo | None:
        with self.catalog.session() as s:
            row = s.execute(select(User).join(ApiKey, ApiKey.user_id == User.id)
                            .where(ApiKey.key_hash == _digest(secret), ApiKey.revoked.is_(False))).scalar()
            return _info(row) if row is not None and row.active else None

    def create_session(self, user: UserInfo) -> tuple[str, str]:
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        with self.catalog.session() as s:
            s.execute(delete(WebSession).where(WebSession.expires_at < utcnow()))
            s.add(WebSession(token_hash=_digest(token), csrf_token=csrf, user_id=user.id,
                             expires_at=utcnow() + timedelta(hours=SESSION_HOURS)))
            s.commit()
        return token, csrf

    def session_user(self, token: str) -> tuple[UserInfo, str] | None:
        with self.catalog.session() as s:
            row = s.execute(select(User, WebSession.csrf_token).join(WebSession, WebSession.user_id == User.id)
                            .where(WebSession.token_hash == _digest(token), WebSession.expires_at > utcnow())).first()
            if row is None or not row[0].active:
                return None
            return _info(row[0]), row[1]

    def end_session(self, token: str) -> None:
        with self.catalog.session() as s:
            s.execute(delete(WebSession).where(WebSession.token_hash == _digest(token)))
            s.commit()

    # -- grants ----------------------------------------------------------------------------------------

    def grant(self, username: str, collection_id: int) -> None:
        user = self.user(username)
        if user.role != INVESTIGATOR:
            raise AccountError(f"{username} is {'an' if user.role[0] in 'aeiou' else 'a'} {user.role}: only "
                               "investigators get collection grants (admins see all, auditors none)")
        with self.catalog.session() as s:
            if s.get(Grant, (user.id, collection_id)) is None:
                s.add(Grant(user_id=user.id, collection_id=collection_id))
                s.commit()

    def revoke(self, username: str, collection_id: int) -> None:
        user = self.user(username)
        with self.catalog.session() as s:
            s.execute(delete(Grant).where(Grant.user_id == user.id, Grant.collection_id == collection_id))
            s.commit()

    def granted_collections(self, user: UserInfo) -> list[str]:
        """Names of the collections this user may search (admins: all)."""
        with self.catalog.session() as s:
            if user.role == ADMIN:
                return list(s.scalars(select(Collection.name).order_by(Collection.name)))
            if user.role != INVESTIGATOR:
                return []
            return list(s.scalars(select(Collection.name).join(Grant, Grant.collection_id == Collection.id)
                                  .where(Grant.user_id == user.id).order_by(Collection.name)))


class LoginThrottle:
    """Slows password guessing without letting a guesser lock an account for everyone.

    Failures count per (username, client address) and per client address, within ``window_s``.
    After ``free_failures`` failures of one pair, that pair waits ``base_delay_s`` before its next
    try, doubling with each further failure up to ``max_delay_s`` -- right password or not, so a
    guesser learns nothing -- while the same user from another address is not slowed at all (an
    attacker cannot lock the admins out). One address that fails ``max_failures_per_client`` times,
    whatever the usernames, is refused for ``lockout_s``. Kept in memory and bounded
    (``max_tracked`` keys): a restart forgets, which only ever helps the real user. The server uses
    :class:`~facesearch.governance.shared.SharedLoginThrottle`: the same rules, counted in the
    database, so that every API process of a home shares them.

    The client address is whatever the server proved: the TCP peer, or the address a *trusted*
    proxy put in ``X-Forwarded-For`` (see :mod:`facesearch.api.proxies`), never a header a client
    chose."""

    def __init__(self, free_failures: int = 3, base_delay_s: float = 2.0, max_delay_s: float = 900.0,
                 max_failures_per_client: int = 30, window_s: float = 900.0, lockout_s: float = 300.0,
                 max_tracked: int = 100_000, clock=None) -> None:
        import threading
        import time

        self.free_failures, self.base_delay_s, self.max_delay_s = free_failures, base_delay_s, max_delay_s
        self.max_failures_per_client, self.window_s, self.lockout_s = max_failures_per_client, window_s, lockout_s
        self.max_tracked = max_tracked
        self.clock = clock or time.monotonic
        self._failures: dict[tuple[str, ...], list[float]] = {}
        self._blocked_until: dict[tuple[str, ...], float] = {}
        self._reported: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    @staticmethod
    def user_key(username: str) -> str:
        from facesearch.governance.audit import bounded_text

        return bounded_text(username.strip().lower())

    def _keys(self, username: str, client: str) -> list[tuple[str, ...]]:
        return [("pair", self.user_key(username), client), ("client", client)]

    def wait_s(self, username: str, client: str) -> float:
        """Seconds until this username may be tried again from this client (0: now)."""
        now = self.clock()
        with self._lock:
            return max([0.0] + [self._blocked_until.get(k, 0.0) - now for k in self._keys(username, client)])

    def first_refusal(self, username: str, client: str) -> bool:
        """True once per blocking period: the refusal worth an audit record (the rest would only
        let a guesser fill the log)."""
        now = self.clock()
        with self._lock:
            blocked = [k for k in self._keys(username, client) if self._blocked_until.get(k, 0.0) > now]
            fresh = [k for k in blocked if k not in self._reported]
            self._reported.update(fresh)
            return bool(fresh)

    def failed(self, username: str, client: str) -> float:
        """Count a failure; the delay it now imposes on this username from this client."""
        now = self.clock()
        with self._lock:
            if len(self._failures) > self.max_tracked:
                self._prune(now)
            pair, per_client = self._keys(username, client)
            recent = [t for t in self._failures.get(pair, []) if now - t < self.window_s] + [now]
            self._failures[pair] = recent
            delay = 0.0
            if len(recent) >= self.free_failures:
                delay = min(self.base_delay_s * 2 ** (len(recent) - self.free_failures), self.max_delay_s)
                self._block(pair, now + delay)
            seen = [t for t in self._failures.get(per_client, []) if now - t < self.window_s] + [now]
            self._failures[per_client] = seen
            if len(seen) >= self.max_failures_per_client:
                self._block(per_client, now + self.lockout_s)
                self._failures[per_client] = []
                delay = max(delay, self.lockout_s)
            return delay

    def _block(self, key: tuple[str, ...], until: float) -> None:
        self._blocked_until[key] = max(until, self._blocked_until.get(key, 0.0))
        self._reported.discard(key)

    def _prune(self, now: float) -> None:
        for key in [k for k, times in self._failures.items() if not times or now - times[-1] >= self.window_s]:
            self._failures.pop(key, None)
        for key in [k for k, until in self._blocked_until.items() if until <= now]:
            self._blocked_until.pop(key, None)
            self._reported.discard(key)

    def succeeded(self, username: str, client: str) -> None:
        with self._lock:
            self._failures.pop(("pair", self.user_key(username), client), None)
