"""The SHA-256 of a model file: the pin every pack's files are checked against before a session
opens them (:mod:`facesearch.models.packs`, :mod:`facesearch.models.runtime`). A module of its
own so that the runtime, the packs and the optional dlib pack share it without importing each other."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
