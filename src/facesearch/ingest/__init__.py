"""Ingest: turning folders of photos into catalog rows and index vectors, crash-safely.

Public surface: :class:`Ingestor`, :class:`IngestSummary`, :func:`iter_files`.
"""

from facesearch.ingest.runner import Ingestor, IngestSummary, iter_files

__all__ = ["IngestSummary", "Ingestor", "iter_files"]
