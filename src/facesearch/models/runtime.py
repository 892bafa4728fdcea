"""ONNX Runtime sessions: opened once per (file, providers, threads), then reused.

CUDA is used when the installed onnxruntime offers it, the CPU otherwise; the thread
count comes from the caller or ``FACESEARCH_THREADS``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import onnxruntime as ort

from facesearch.errors import ChecksumMismatchError, ModelError
from facesearch.models.packs import sha256_file

_PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
_cache: dict[tuple, ort.InferenceSession] = {}
_lock = threading.Lock()


def default_providers() -> list[str]:
    available = set(ort.get_available_providers())
    return [p for p in _PREFERRED_PROVIDERS if p in available] or ["CPUExecutionProvider"]


def default_threads() -> int:
    env = os.environ.get("FACESEARCH_THREADS")
    if env:
        return max(1, int(env))
    return max(1, os.cpu_count() or 1)


def open_session(
    path: Path,
    *,
    verify_sha256: str | None,
    providers: list[str] | None = None,
    threads: int | None = None,
) -> ort.InferenceSession:
    """Return a cached session for ``path``; check its hash first when one is given."""
    providers = list(providers or default_providers())
    threads = threads or default_threads()
    key = (str(Path(path).resolve()), tuple(providers), threads)
    with _lock:
        # Hash even on a cache hit: a file swapped after the first load is still refused.
        if verify_sha256 is not None:
            actual = sha256_file(Path(path))
            if actual != verify_sha256:
                raise ChecksumMismatchError(path, verify_sha256, actual)
        session = _cache.get(key)
        if session is not None:
            return session
        options = ort.SessionOptions()
        # The recognizer declares a fixed [1, 512] output but runs batched fine; silence
        # the shape warning that would otherwise print on every batch.
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types
            raise ModelError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc
        _cache[key] = session
        return session
