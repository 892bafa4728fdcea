"""Signed checkpoints of the audit chain: what anchors it outside the database.

The hash chain alone shows edits only to someone who cannot recompute it; anyone who can write
the database can rewrite a record, recompute every later hash and the head row with
:func:`~facesearch.governance.audit.record_hash`, and the chain verifies. A checkpoint is the
chain head (newest id and hash) plus a short digest of every record since the previous
checkpoint, signed with an Ed25519 key that is *not* in the database:

- the key comes from ``$FACESEARCH_AUDIT_KEY`` (a PEM, or the base64 of the 32-byte seed), or the
  file ``$FACESEARCH_AUDIT_KEY_FILE``, or ``HOME/audit-signing.key`` (created mode 0600 on first
  use; a key file readable by group or others is refused);
- checkpoints are files in ``HOME/audit-checkpoints/`` (with ``public-key.pem``), created with
  ``O_EXCL`` (never overwritten), and copied to any export folder given (``--export DIR`` or
  ``$FACESEARCH_AUDIT_EXPORT``: a write-once mount, another machine's share);
- :meth:`AuditAnchor.verify` checks the chain, then every checkpoint (stored and exported): its
  signature under the trusted public key, and every record it covers against its digest, naming
  the first record that differs.

What this does not catch is documented in ``docs/accountability.md`` (records written after the
newest checkpoint; an attacker who holds the key; one who can also delete the home's checkpoints
and has no export to answer to).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select

from facesearch.errors import FacesearchError
from facesearch.governance.audit import AuditLog, ChainCheck
from facesearch.governance.schema import AuditRecord

log = logging.getLogger(__name__)

KEY_ENV = "FACESEARCH_AUDIT_KEY"
KEY_FILE_ENV = "FACESEARCH_AUDIT_KEY_FILE"
PUBLIC_KEY_ENV = "FACESEARCH_AUDIT_PUBLIC_KEY"
EXPORT_ENV = "FACESEARCH_AUDIT_EXPORT"
KEY_FILE = "audit-signing.key"
STORE = "audit-checkpoints"
PUBLIC_KEY_FILE = "public-key.pem"
#: Hex characters of each record's hash kept in a checkpoint: enough to name the record that changed
#: (the full head hash, also signed, is what detection rests on).
DIGEST_CHARS = 16
VERSION = 1


class AuditKeyError(FacesearchError):
    """The audit signing key is missing, unreadable or too widely readable."""


@dataclass(frozen=True)
class Checkpoint:
    at: str
    by: str
    from_id: int  # covers records from_id+1 .. last_id
    last_id: int
    last_hash: str
    digests: str  # DIGEST_CHARS hex characters per record, in id order
    key_id: str
    signature: str = ""
    version: int = VERSION

    def payload(self) -> bytes:
        fields = {k: v for k, v in self.to_dict().items() if k != "signature"}
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def to_dict(self) -> dict:
        return {"version": self.version, "at": self.at, "by": self.by, "from_id": self.from_id,
                "last_id": self.last_id, "last_hash": self.last_hash, "digests": self.digests,
                "key_id": self.key_id, "signature": self.signature}

    @property
    def name(self) -> str:
        return f"{self.last_id:012d}-{self.at.replace(':', '').replace('-', '').replace('+', 'Z')[:22]}.json"


@dataclass
class CheckpointResult:
    checkpoint: Checkpoint | None  # None: nothing new since the newest checkpoint
    path: Path | None = None
    exported: list[Path] = field(default_factory=list)
    reason: str = ""


# -- keys ------------------------------------------------------------------------------------------


def key_id(public: Ed25519PublicKey) -> str:
    import hashlib

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_path(home: Path) -> Path:
    return Path(os.environ.get(KEY_FILE_ENV) or Path(home) / KEY_FILE).expanduser()


def load_signing_key(home: Path, *, create: bool = False) -> Ed25519PrivateKey | None:
    """The audit signing key (see the module docstring for where it comes from); ``create``
    makes the key file if there is none. None when there is no key and ``create`` is false."""
    secret = os.environ.get(KEY_ENV, "").strip()
    if secret:
        try:
            if secret.startswith("-----BEGIN"):
                key = serialization.load_pem_private_key(secret.encode(), password=None)
            else:
                key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(secret, validate=True))
        except (ValueError, TypeError) as exc:
            raise AuditKeyError(f"${KEY_ENV} is not an Ed25519 key (PEM, or base64 of 32 bytes): {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditKeyError(f"${KEY_ENV} is not an Ed25519 key")
        return key
    path = key_path(home)
    if path.is_file():
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise AuditKeyError(f"{path}: readable by others (mode {stat.S_IMODE(mode):o}); "
                                f"only the service user may read the audit key: chmod 600 {path}")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditKeyError(f"{path}: not an Ed25519 private key")
        return key
    if not create:
        return None
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _write_once(path, pem, 0o600)
    return key


def _write_once(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Create ``path`` holding ``data``; never overwrite (False if it already exists)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _load_public(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise AuditKeyError("not an Ed25519 public key")
    return key


# -- the anchor ------------------------------------------------------------------------------------


def _read_checkpoint(path: Path) -> Checkpoint:
    data = json.loads(path.read_text())
    return Checkpoint(**{k: data[k] for k in ("at", "by", "from_id", "last_id", "last_hash", "digests", "key_id",
                                              "signature", "version")})


def export_dirs(given: list[str | Path] | None = None) -> list[Path]:
    """The export folders: those given, else ``$FACESEARCH_AUDIT_EXPORT`` (``os.pathsep``-separated)."""
    if given:
        return [Path(p).expanduser() for p in given]
    env = os.environ.get(EXPORT_ENV, "")
    return [Path(p).expanduser() for p in env.split(os.pathsep) if p]


class AuditAnchor:
    """Checkpoints of ``log`` kept under ``home`` (and exported); verification against them."""

    def __init__(self, log: AuditLog, home: Path) -> None:
        self.log, self.home = log, Path(home)
        self.store = self.home / STORE

    def stored(self) -> list[tuple[Path, Checkpoint | None]]:
        return self._read_dir(self.store)

    @staticmethod
    def _read_dir(folder: Path) -> list[tuple[Path, Checkpoint | None]]:
        found = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                found.append((path, _read_checkpoint(path)))
            except (ValueError, KeyError, TypeError, OSError):
                found.append((path, None))
        return found

    def checkpoint(self, by: str, *, export: list[str | Path] | None = None,
                   key: Ed25519PrivateKey | None = None) -> CheckpointResult:
        """Sign the chain head (if the chain verifies and has grown since the newest checkpoint),
        store it, and copy every stored checkpoint and the public key to each export folder."""
        key = key or load_signing_key(self.home, create=True)
        check = self.verify(export=export, public_key=key.public_key())
        if not check.ok:
            first = check.problems[0]
            raise FacesearchError(f"the audit chain does not verify (record {first[0]}: {first[1]}): "
                                  "not signing it; investigate with `facesearch audit verify`")
        good = [cp for _, cp in self.stored() if cp is not None]
        newest = max(good, key=lambda cp: cp.last_id, default=None)
        with self.log.catalog.session() as s:
            last = s.scalar(select(AuditRecord).order_by(AuditRecord.id.desc()).limit(1))
            if last is None or (newest is not None and newest.last_id == last.id and newest.last_hash == last.hash):
                result = CheckpointResult(None, reason="nothing new since the newest checkpoint"
                                          if last is not None else "the audit log is empty")
                result.exported = self._export(export, key.public_key())
                return result
            from_id = newest.last_id if newest is not None and newest.last_id < last.id else 0
            hashes = [h for (h,) in s.execute(select(AuditRecord.hash).where(AuditRecord.id > from_id)
                                              .order_by(AuditRecord.id))]
        unsigned = Checkpoint(at=datetime.now(UTC).isoformat(timespec="microseconds"), by=by, from_id=from_id,
                              last_id=last.id, last_hash=last.hash,
                              digests="".join(h[:DIGEST_CHARS] for h in hashes), key_id=key_id(key.public_key()))
        signed = Checkpoint(**{**unsigned.to_dict(),
                               "signature": base64.b64encode(key.sign(unsigned.payload())).decode()})
        self.store.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_once(self.store / PUBLIC_KEY_FILE, public_pem(key.public_key()), 0o644)
        path = self.store / signed.name
        if not _write_once(path, (json.dumps(signed.to_dict(), indent=1) + "\n").encode()):
            raise FacesearchError(f"{path} exists already: checkpoints are never overwritten")
        log.info("audit checkpoint of records %d..%d signed (key %s): %s", signed.from_id + 1, signed.last_id,
                 signed.key_id, path)
        return CheckpointResult(signed, path, self._export(export, key.public_key()))

    def _export(self, export: list[str | Path] | None, public: Ed25519PublicKey) -> list[Path]:
        """Copy the public key and every stored checkpoint missing there to each export folder
        (write-once: existing files are never replaced; a different public key there is an error)."""
        written = []
        for folder in export_dirs(export):
            folder.mkdir(parents=True, exist_ok=True)
            pem = public_pem(public)
            target = folder / PUBLIC_KEY_FILE
            if not _write_once(target, pem, 0o644) and target.read_bytes() != pem:
                raise AuditKeyError(f"{target} holds a different public key: this export belongs to another key")
            for path, cp in self.stored():
                if cp is not None and _write_once(folder / path.name, path.read_bytes(), 0o644):
                    written.append(folder / path.name)
        return written

    def trusted_public_key(self, public_key: Ed25519PublicKey | str | Path | None = None
                           ) -> tuple[Ed25519PublicKey | None, str]:
        """The key checkpoints must be signed with, and where it came from: the one given (or
        ``$FACESEARCH_AUDIT_PUBLIC_KEY``), else the signing key's, else the home's copy."""
        if isinstance(public_key, Ed25519PublicKey):
            return public_key, "given"
        pinned = public_key or os.environ.get(PUBLIC_KEY_ENV)
        if pinned:
            return _load_public(Path(pinned).expanduser().read_bytes()), f"pinned ({pinned})"
        private = load_signing_key(self.home)
        if private is not None:
            return private.public_key(), "the signing key"
        stored = self.store / PUBLIC_KEY_FILE
        if stored.is_file():
            return _load_public(stored.read_bytes()), f"{stored} (not pinned: pass --public-key to pin it)"
        return None, "none"

    def verify(self, *, export: list[str | Path] | None = None,
               public_key: Ed25519PublicKey | str | Path | None = None) -> ChainCheck:
        """The chain (:meth:`AuditLog.verify`) and every checkpoint, stored or exported."""
        check = self.log.verify()
        public, source = self.trusted_public_key(public_key)
        found: dict[str, list[tuple[str, Path, Checkpoint | None]]] = {}
        for where, folder in [("home", self.store)] + [("export", d) for d in export_dirs(export)]:
            for path, cp in self._read_dir(folder):
                found.setdefault(path.name, []).append((where, path, cp))
            pem = folder / PUBLIC_KEY_FILE
            if public is not None and pem.is_file() and pem.read_bytes() != public_pem(public):
                check.problems.append((0, f"{pem} is not the audit public key ({source}): replaced"))
        check.checkpoints = len(found)
        check.notes.append(f"public key: {source}" + (f", key id {key_id(public)}" if public else ""))
        if found and public is None:
            check.problems.append((0, "checkpoints exist but no public key to check them with"))
        for name, copies in sorted(found.items()):
            if all(where == "export" for where, _, _ in copies):
                check.problems.append((copies[0][2].last_id if copies[0][2] else 0,
                                       f"checkpoint {name} is in the export ({copies[0][1].parent}) but missing "
                                       "from the home: deleted"))
            seen: set[bytes] = set()
            for _where, path, cp in copies:
                if cp is None:
                    check.problems.append((0, f"checkpoint {path} is unreadable"))
                    continue
                if cp.payload() + cp.signature.encode() in seen:
                    continue  # the same checkpoint in the home and the export: check it once
                seen.add(cp.payload() + cp.signature.encode())
                if public is not None:
                    self._check_one(check, public, path, cp)
        check.problems.sort(key=lambda p: p[0])
        return check

    def _check_one(self, check: ChainCheck, public: Ed25519PublicKey, path: Path, cp: Checkpoint) -> None:
        try:
            public.verify(base64.b64decode(cp.signature), cp.payload())
        except (InvalidSignature, ValueError):
            check.problems.append((cp.last_id, f"checkpoint {path}: the signature does not verify with the "
                                               "audit public key: forged or altered"))
            return
        expected = [cp.digests[i:i + DIGEST_CHARS] for i in range(0, len(cp.digests), DIGEST_CHARS)]
        with self.log.catalog.session() as s:
            rows = dict(s.execute(select(AuditRecord.id, AuditRecord.hash)
                                  .where(AuditRecord.id > cp.from_id, AuditRecord.id <= cp.last_id)).all())
        for offset, digest in enumerate(expected):
            record_id = cp.from_id + 1 + offset
            actual = rows.get(record_id)
            if actual is None:
                check.problems.append((record_id, f"missing, but signed in checkpoint {path.name} ({cp.at}): "
                                                  "deleted after it was signed"))
                return
            if actual[:DIGEST_CHARS] != digest or (record_id == cp.last_id and actual != cp.last_hash):
                check.problems.append((record_id, f"differs from signed checkpoint {path.name} ({cp.at}): "
                                                  "rewritten after it was signed"))
                return
