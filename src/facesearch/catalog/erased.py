"""Erased content, remembered without being named: a keyed hash per erased file.

After an erasure the catalog must not hold the erased photos' paths, names or SHA-256, yet
indexing the same folder again must not silently bring the person back. So the only thing
kept is ``HMAC-SHA256(key, sha256 of the file)``: with the key (kept outside the catalog, in
``HOME/keys/erasure.key`` mode 0600 or ``$FACESEARCH_ERASURE_KEY``) ingest can tell "these
bytes were erased"; without it, someone holding a copy of the database and a candidate photo
cannot confirm the photo was ever here (a plain SHA-256 would let them).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from facesearch.catalog.schema import ErasedContent
from facesearch.errors import FacesearchError

#: hex (64+ characters) or any string of 32+ characters: the erasure key, instead of the key file
KEY_ENV = "FACESEARCH_ERASURE_KEY"
KEY_FILE = Path("keys") / "erasure.key"


class ErasureKeyError(FacesearchError):
    """The erasure key is missing, unreadable or too short."""


def erasure_key(home: Path, create: bool = True) -> bytes:
    """The key: from the environment, else the home's key file (created, 0600, on first use).

    ``create=False`` refuses a missing key file: with erased content remembered, a fresh key
    would silently recognise none of it (the refusal would stop working without a word)."""
    env = os.environ.get(KEY_ENV, "").strip()
    if env:
        try:
            key = bytes.fromhex(env)
        except ValueError:
            key = env.encode()
        if len(key) < 32:
            raise ErasureKeyError(f"${KEY_ENV} is too short: give 32 bytes or more (64 hex characters)")
        return key
    path = Path(home) / KEY_FILE
    if not create and not path.is_file():
        raise ErasureKeyError(f"{path} is missing while erased content is remembered under it: restore the key "
                              f"file (or set ${KEY_ENV}); without it erased photos could be indexed again")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    try:  # O_EXCL: two processes creating it at once agree on the winner's key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise ErasureKeyError(f"{path}: unreadable erasure key ({exc})") from exc
    if len(key) < 32:
        raise ErasureKeyError(f"{path}: the erasure key is too short")
    return key


class ErasureLedger:
    """The keyed hashes of erased content, in the catalog's ``erased_content`` table."""

    def __init__(self, catalog, key: Callable[[bool], bytes]) -> None:
        self.catalog = catalog
        self._key_source = key  # key(create) -> bytes
        self._key: bytes | None = None

    def _load_key(self, create: bool) -> bytes:
        if self._key is None:
            self._key = self._key_source(create)
        return self._key

    def keyed(self, sha256: str) -> str:
        return hmac.new(self._load_key(True), sha256.encode(), hashlib.sha256).hexdigest()

    def keyed_bytes(self, data: bytes) -> str:
        """The keyed hash of some content (what audit records name a probe by)."""
        return self.keyed(hashlib.sha256(data).hexdigest())

    def record(self, session: Session, sha256s: Iterable[str]) -> int:
        """Remember erased content in the caller's transaction (the one that deletes the rows)."""
        wanted = {self.keyed(sha) for sha in sha256s if sha}
        if not wanted:
            return 0
        have = set(session.scalars(select(ErasedContent.keyed_hash).where(ErasedContent.keyed_hash.in_(wanted))))
        session.add_all(ErasedContent(keyed_hash=h) for h in sorted(wanted - have))
        return len(wanted - have)

    def forget(self, sha256s: Iterable[str]) -> int:
        """Readmitted content (an audited admin override) is no longer remembered as erased."""
        keyed = [self.keyed(sha) for sha in sha256s]
        if not keyed:
            return 0
        with self.catalog.session() as s:
            rows = list(s.scalars(select(ErasedContent).where(ErasedContent.keyed_hash.in_(keyed))))
            for row in rows:
                s.delete(row)
            s.commit()
        return len(rows)

    def count(self) -> int:
        with self.catalog.session() as s:
            return int(s.scalar(select(func.count()).select_from(ErasedContent)) or 0)

    def checker(self) -> Callable[[str], bool]:
        """``erased(sha256) -> bool`` over a snapshot taken now: one query per ingest run."""
        with self.catalog.session() as s:
            known = set(s.scalars(select(ErasedContent.keyed_hash)))
        if not known:
            return lambda _sha: False
        key = self._load_key(False)  # never a fresh key here: it would recognise nothing
        return lambda sha: hmac.new(key, sha.encode(), hashlib.sha256).hexdigest() in known
