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
from facesearch.governance.schema import ROLES, ApiKey, Grant, User, WebSession

SESSION_HOURS = 12
MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()


class AccountError(FacesearchError):
    """A user-management request was refused."""


@dataclass(frozen=True)
class UserInfo:
    id: int
    username: str
    role: str
    active: bool = True


def local_operator() -> UserInfo:
    """Whoever runs the CLI on a home can read its files anyway: they act as an admin, audited under
    ``local:<login>`` (searches still need a purpose and a case reference)."""
    return UserInfo(0, f"local:{getpass.getuser()}", "admin")


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
            return len(list(s.scalars(select(User.id).where(User.role == "admin", User.active.is_(True)))))

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

    def set_password(self, username: str, password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise AccountError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
        with self.catalog.session() as s:
            row = s.scalar(select(User).where(User.username == username))
            if row is None:
                raise AccountError(f"no user {username!r}")
            row.password_hash = _hasher.hash(password)
            s.commit()

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
        user = self.user(username)
        secret = "fsk_" + secrets.token_urlsafe(32)
        with self.catalog.session() as s:
            s.add(ApiKey(user_id=user.id, key_hash=_digest(secret), label=label))
            s.commit()
        return secret

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
        if user.role != "investigator":
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
            if user.role == "admin":
                return list(s.scalars(select(Collection.name).order_by(Collection.name)))
            if user.role != "investigator":
                return []
            return list(s.scalars(select(Collection.name).join(Grant, Grant.collection_id == Collection.id)
                                  .where(Grant.user_id == user.id).order_by(Collection.name)))


class LoginThrottle:
    """Slows password guessing. After ``max_failures`` failed logins for one username within
    ``window_s``, or ``max_failures_per_client`` from one client address, every further attempt
    for it is refused for ``lockout_s`` -- right password or not, so a guesser learns nothing.
    Kept in memory: a restart forgets, which only ever helps the real user."""

    def __init__(self, max_failures: int = 5, max_failures_per_client: int = 30, window_s: float = 300.0,
                 lockout_s: float = 300.0, clock=None) -> None:
        import threading
        import time

        self.limits = {"user": max_failures, "client": max_failures_per_client}
        self.window_s, self.lockout_s = window_s, lockout_s
        self.clock = clock or time.monotonic
        self._failures: dict[tuple[str, str], list[float]] = {}
        self._locked_until: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def keys(username: str, client: str) -> list[tuple[str, str]]:
        return [("user", username.strip().lower()), ("client", client)]

    def wait_s(self, username: str, client: str) -> float:
        """Seconds until this username / client may try again (0: now)."""
        now = self.clock()
        with self._lock:
            return max([0.0] + [self._locked_until.get(k, 0.0) - now for k in self.keys(username, client)])

    def failed(self, username: str, client: str) -> None:
        now = self.clock()
        with self._lock:
            for key in self.keys(username, client):
                recent = [t for t in self._failures.get(key, []) if now - t < self.window_s] + [now]
                self._failures[key] = recent
                if len(recent) >= self.limits[key[0]]:
                    self._locked_until[key] = now + self.lockout_s
                    self._failures[key] = []

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(("user", username.strip().lower()), None)

