"""The catalog: collections, images, faces (with their embeddings) and the ingest journal,
in SQLite (default) or PostgreSQL through SQLAlchemy 2, schema managed by Alembic
(:mod:`facesearch.catalog.migrate`).

Public surface: :class:`Catalog`, :class:`NewFace`, :class:`NewImage`, :class:`FaceInfo`,
:class:`CollectionInfo`, :class:`CatalogError`, :func:`sqlite_url`.
"""

from facesearch.catalog.store import (
    Catalog,
    CatalogConflict,
    CatalogError,
    CollectionInfo,
    FaceInfo,
    NewFace,
    NewImage,
    RemovedFaces,
    sqlite_url,
)
from facesearch.catalog.thumbnails import ThumbnailStore

__all__ = ["Catalog", "CatalogConflict", "CatalogError", "CollectionInfo", "FaceInfo", "NewFace", "NewImage",
           "RemovedFaces", "ThumbnailStore", "sqlite_url"]
