"""Optional parts of facesearch (pip extras) and the one error a missing one raises.

``[milvus]`` (pymilvus, milvus-lite) for the Milvus index backend, ``[eval]`` (matplotlib) for
evaluation plots, ``[gpu]`` (onnxruntime-gpu) for CUDA, ``[ray]`` for distributed ingest. They are
imported only where used, so a plain install runs everything else; using a missing one says which extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from facesearch.errors import FacesearchError


class MissingExtraError(FacesearchError):
    """An optional dependency is not installed."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise a one-line error naming the pip extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{feature} needs the optional package {module.split('.')[0]!r}: "
                                f"pip install 'facesearch[{extra}]'") from exc
