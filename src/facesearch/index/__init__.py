"""Vector indexes behind one small interface (:class:`VectorIndex`), keyed by catalog face id.

- ``faiss`` (embedded default): exact scan while small, 512-bit sign codes with exact
  re-ranking of a shortlist when large; tombstone deletes; atomic saves; from 1M faces the
  re-rank vectors move to an fp16 memory-mapped file (``faiss_storage``: auto | ram | mmap).
- ``milvus``: pymilvus against milvus-lite (a local file, FLAT) or a Milvus server by URI and
  token (sign codes in a BINARY_VECTOR field + exact re-rank of the shortlist: ``BIN_RERANK``).

Public surface: :func:`open_index`, :class:`VectorIndex`, :class:`Hits`.
"""

from __future__ import annotations

from pathlib import Path

from facesearch.index.base import Hits, VectorIndex
from facesearch.index.faiss_index import FaissIndex

BACKENDS = ("faiss", "milvus")


def open_index(backend: str, *, directory: Path, collection_id: int, dim: int = 512,
               milvus_uri: str | None = None, **options) -> VectorIndex:
    """The index of one facesearch collection, for the given backend."""
    if backend == "faiss":
        if "faiss_storage" in options:  # the home's setting (auto | ram | mmap)
            options["storage"] = options.pop("faiss_storage")
        return FaissIndex(Path(directory) / "faiss" / f"c{collection_id}", dim, **options)
    if backend == "milvus":
        from facesearch.index.milvus_index import MilvusIndex

        if milvus_uri is None:
            Path(directory).mkdir(parents=True, exist_ok=True)
        # New collections on a server get sign codes + exact re-rank (p50 and misses within target
        # at 1M, docs/scale.md); milvus-lite keeps FLAT. An existing collection keeps its kind.
        on_server = milvus_uri is not None and milvus_uri.split("://", 1)[0] in ("http", "https", "tcp", "grpc")
        options.setdefault("index_type", "BIN_RERANK" if on_server else "FLAT")
        uri = milvus_uri or str(Path(directory) / "milvus.db")
        return MilvusIndex(uri, f"facesearch_c{collection_id}", dim, **options)
    raise ValueError(f"unknown index backend {backend!r} (choose from {', '.join(BACKENDS)})")


__all__ = ["BACKENDS", "FaissIndex", "Hits", "VectorIndex", "open_index"]
