"""Inference sessions: opened once per (file, runtime, providers, threads), then reused.

Two runtimes run the same ONNX files: ONNX Runtime (the portable default; CUDA when the
installed onnxruntime offers it, the CPU otherwise) and OpenVINO (CPU, bf16 where the CPU
has matrix units for it; :mod:`facesearch.models.openvino_runtime`). ``runtime="auto"`` (the
default) takes ONNX Runtime on a GPU and OpenVINO on a CPU when it is installed (the
``[openvino]`` extra): bf16 there scores LFW like ONNX Runtime's fp32 (docs/accuracy.md) at
2-4x the speed. The runtime comes
from the caller or ``FACESEARCH_RUNTIME``, the OpenVINO precision from
``FACESEARCH_PRECISION``, the thread count from the caller or ``FACESEARCH_THREADS``.
"""

from __future__ import annotations

import os
import threading
from importlib import metadata
from pathlib import Path

from facesearch.errors import ChecksumMismatchError, ModelError
from facesearch.models.checksums import sha256_file

_PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
RUNTIMES = ("auto", "onnxruntime", "openvino")
_cache: dict[tuple, object] = {}
_lock = threading.Lock()


def default_providers() -> list[str]:
    if not _gpu_build_installed():
        # The CPU build offers no GPU provider: knowing that without importing onnxruntime
        # (0.1-0.3 s) matters when OpenVINO runs the models.
        return ["CPUExecutionProvider"]
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    return [p for p in _PREFERRED_PROVIDERS if p in available] or ["CPUExecutionProvider"]


def _gpu_build_installed() -> bool:
    for name in ("onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-training"):
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        return True
    return False


def default_threads() -> int:
    env = os.environ.get("FACESEARCH_THREADS")
    if env:
        return max(1, int(env))
    return max(1, os.cpu_count() or 1)


def resolve_runtime(runtime: str | None = None, providers: list[str] | None = None) -> str:
    """Which runtime ``runtime`` (or ``FACESEARCH_RUNTIME``, default ``auto``) means here."""
    from facesearch.models import openvino_runtime

    chosen = (runtime or os.environ.get("FACESEARCH_RUNTIME") or "auto").lower()
    if chosen not in RUNTIMES:
        raise ModelError(f"unknown runtime {chosen!r}: choose one of {', '.join(RUNTIMES)}")
    if chosen == "auto":
        on_gpu = "CUDAExecutionProvider" in (providers or default_providers())
        return "openvino" if openvino_runtime.available() and not on_gpu else "onnxruntime"
    if chosen == "openvino" and not openvino_runtime.available():
        raise ModelError("runtime openvino asked for but not installed: pip install 'facesearch[openvino]'")
    return chosen


def runtime_label(runtime: str | None = None, precision: str | None = None) -> str:
    """``onnxruntime`` or ``openvino-bf16`` / ``openvino-fp32``: what embeddings were computed with."""
    chosen = resolve_runtime(runtime)
    if chosen != "openvino":
        return chosen
    from facesearch.models.openvino_runtime import resolve_precision

    return f"openvino-{resolve_precision(precision or os.environ.get('FACESEARCH_PRECISION') or 'auto')}"


def open_session(
    path: Path,
    *,
    verify_sha256: str | None,
    providers: list[str] | None = None,
    threads: int | None = None,
    runtime: str | None = None,
    precision: str | None = None,
    byte_input: tuple[float, float] | None = None,
):
    """Return a cached session for ``path``; check its hash first when one is given.

    The result is an ``ort.InferenceSession`` or an :class:`OpenVinoSession` (same interface).
    ``byte_input`` (mean, std): where the runtime can, the session takes RGB uint8 images and
    normalises them itself; its ``byte_input`` attribute says whether it does (ONNX Runtime: no).
    """
    providers = list(providers or default_providers())
    threads = threads or default_threads()
    runtime = resolve_runtime(runtime, providers)
    precision = (precision or os.environ.get("FACESEARCH_PRECISION") or "auto").lower()
    key = (str(Path(path).resolve()), runtime, precision if runtime == "openvino" else "", tuple(providers), threads,
           byte_input if runtime == "openvino" else None)
    with _lock:
        # Hash even on a cache hit: a file swapped after the first load is still refused.
        if verify_sha256 is not None:
            actual = sha256_file(Path(path))
            if actual != verify_sha256:
                raise ChecksumMismatchError(path, verify_sha256, actual)
        session = _cache.get(key)
        if session is not None:
            return session
        if runtime == "openvino":
            from facesearch.models.openvino_runtime import OpenVinoSession

            try:
                session = OpenVinoSession(Path(path), threads=threads, precision=precision, byte_input=byte_input)
            except ValueError as exc:
                raise ModelError(str(exc)) from exc
            except Exception as exc:  # noqa: BLE001 - OpenVINO raises plain RuntimeErrors
                raise ModelError(f"{path}: OpenVINO cannot load it ({exc})") from exc
            _cache[key] = session
            return session
        import onnxruntime as ort

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
