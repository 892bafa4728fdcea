"""The Catalog: collections, images and faces in a real database, migrated by Alembic.

SQLite (WAL) is the embedded default; a PostgreSQL URL works the same. Writes that belong
together (an image and all its faces) commit in one transaction, so a crash leaves either
the whole image or nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import MetaData, create_engine, delete, event, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from facesearch.catalog.migrate import migrate
from facesearch.catalog.schema import Collection, FaceRecord, ImageRecord, IngestEvent
from facesearch.errors import FacesearchError

log = logging.getLogger(__name__)

#: A collection keeps photos between one day and a hundred years (None: until erased).
MIN_RETENTION_DAYS, MAX_RETENTION_DAYS = 1, 36_500


def valid_retention_days(days: object) -> bool:
    """The one rule for a retention period, used when it is set and when it is swept."""
    return isinstance(days, int) and not isinstance(days, bool) and MIN_RETENTION_DAYS <= days <= MAX_RETENTION_DAYS



class CatalogError(FacesearchError):
    """A catalog operation was refused (unknown collection, duplicate name, ...)."""


class CatalogConflict(CatalogError):
    """The name or label is already taken (the API answers 409)."""


@dataclass(frozen=True)
class CollectionInfo:
    id: int
    name: str
    legal_basis: str
    retention_days: int | None
    keep_thumbnails: bool
    pack: str
    images: int = 0
    faces: int = 0


@dataclass(frozen=True)
class NewFace:
    face_index: int
    box: tuple[float, float, float, float]
    landmarks: list[list[float]]
    det_score: float
    quality: float
    quality_issues: tuple[str, ...]
    embedding: np.ndarray
    thumbnail: str | None
    timestamp_s: float | None = None  # video faces: seconds from the start
    track_id: int | None = None
    frame: str | None = None  # video faces: the stored frame, relative to the thumbnail root
    track_span: tuple[float, float] | None = None  # video faces: first and last time the track was seen


@dataclass(frozen=True)
class NewImage:
    sha256: str
    source: str
    width: int
    height: int
    size_bytes: int
    faces: list[NewFace]
    media: str = "image"  # image | video
    duration_s: float | None = None
    rotation: int = 0
    journal: tuple[str, str, str] | None = None  # (run id, name, reason): journalled "indexed" in the same commit


@dataclass(frozen=True)
class FaceInfo:
    id: int
    image_id: int
    collection_id: int
    collection: str
    face_index: int
    box: tuple[float, float, float, float]
    quality: float
    quality_issues: tuple[str, ...]
    image_source: str
    image_sha256: str
    thumbnail: str | None
    media: str = "image"  # image | video
    timestamp_s: float | None = None
    track_id: int | None = None
    frame: str | None = None
    image_size: tuple[int, int] = (0, 0)  # (width, height) of the photo or video
    track_span: tuple[float, float] | None = None  # video: when this face's track is on screen
    rotation: int = 0  # degrees clockwise the photo file is turned to be upright (the box is of the upright one)

    @property
    def is_video(self) -> bool:
        return self.media == "video"


@dataclass(frozen=True)
class RemovedFaces:
    face_ids: list[int]
    image_ids: list[int]
    thumbnails: list[str]
    collection_ids: list[int]
    image_sources: list[str] = ()  # of the removed images: copies we hold must go too
    image_sha256s: list[str] = ()  # of the removed images: remembered only as keyed hashes


#: Called inside the erasing transaction with the SHA-256 of every image removed: records them
#: (as keyed hashes) so that the rows' deletion and the memory of the erasure commit together.
Tombstone = Callable[[Session, list[str]], object]


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Deleted rows are overwritten with zeros, not left in free pages: erasure leaves no trace.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


class Catalog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, schema: MetaData | None = None) -> Catalog:
        """Open and migrate the database; given ``schema`` (every model's metadata), a new one is
        created from it in one step (:mod:`facesearch.catalog.migrate`)."""
        engine = create_engine(url, future=True)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        migrate(engine, schema)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return self._sessions()

    # -- collections ------------------------------------------------------------------------

    def create_collection(self, name: str, pack: str, legal_basis: str = "",
                          retention_days: int | None = None, keep_thumbnails: bool = True) -> CollectionInfo:
        if retention_days is not None and not valid_retention_days(retention_days):
            raise CatalogError(f"retention must be between {MIN_RETENTION_DAYS} and {MAX_RETENTION_DAYS:,} days "
                               f"(got {retention_days}); leave it out to keep photos until erased")
        with self.session() as s:
            row = Collection(name=name, pack=pack, legal_basis=legal_basis,
                             retention_days=retention_days, keep_thumbnails=keep_thumbnails)
            s.add(row)
            try:
                s.commit()
            except IntegrityError as exc:
                raise CatalogError(f"collection {name!r} already exists") from exc
            return _collection_info(row)

    def collection(self, name: str) -> CollectionInfo:
        with self.session() as s:
            row = s.scalar(select(Collection).where(Collection.name == name))
            if row is None:
                known = ", ".join(s.scalars(select(Collection.name))) or "none yet"
                raise CatalogError(f"no collection named {name!r} (collections: {known})")
            return self._with_counts(s, row)

    def collections(self) -> list[CollectionInfo]:
        with self.session() as s:
            return [self._with_counts(s, row) for row in s.scalars(select(Collection).order_by(Collection.name))]

    def _with_counts(self, s: Session, row: Collection) -> CollectionInfo:
        images = s.scalar(select(func.count()).select_from(ImageRecord)
                          .where(ImageRecord.collection_id == row.id)) or 0
        faces = s.scalar(select(func.count()).select_from(FaceRecord)
                         .where(FaceRecord.collection_id == row.id)) or 0
        return _collection_info(row, images, faces)

    # -- ingest ---------------------------------------------------------------------------------

    def known_hashes(self, collection_id: int) -> set[str]:
        with self.session() as s:
            return set(s.scalars(select(ImageRecord.sha256).where(ImageRecord.collection_id == collection_id)))

    def add_image(self, collection_id: int, sha256: str, source: str, width: int, height: int,
                  size_bytes: int, faces: list[NewFace], pack: str, *, media: str = "image",
                  duration_s: float | None = None, rotation: int = 0) -> list[int]:
        """Insert an image (or a video) and its faces atomically; returns the new face ids (= vector ids)."""
        image = NewImage(sha256, source, width, height, size_bytes, faces, media, duration_s, rotation)
        return self.add_images(collection_id, [image], pack)[0]

    def add_images(self, collection_id: int, images: list[NewImage], pack: str) -> list[list[int]]:
        """Insert images with their faces, and their journal entries, in one transaction (all or
        none: an ingest commits a batch of photos at once); the new face ids of each image."""
        with self.session() as s:
            records = [ImageRecord(collection_id=collection_id, sha256=i.sha256, source=i.source, width=i.width,
                                   height=i.height, size_bytes=i.size_bytes, face_count=len(i.faces), media=i.media,
                                   duration_s=i.duration_s, rotation=i.rotation) for i in images]
            s.add_all(records)
            try:
                s.flush()
            except IntegrityError as exc:
                raise _duplicate(images) from exc
            rows = [[FaceRecord(
                image_id=record.id, collection_id=collection_id, face_index=f.face_index,
                x1=f.box[0], y1=f.box[1], x2=f.box[2], y2=f.box[3],
                landmarks=json.dumps(f.landmarks), det_score=f.det_score, quality=f.quality,
                quality_issues=",".join(f.quality_issues), pack=pack,
                embedding=np.asarray(f.embedding, dtype="<f4").tobytes(), thumbnail=f.thumbnail,
                timestamp_s=f.timestamp_s, track_id=f.track_id, frame=f.frame,
                track_start_s=f.track_span[0] if f.track_span else None,
                track_end_s=f.track_span[1] if f.track_span else None,
            ) for f in image.faces] for image, record in zip(images, records)]
            s.add_all([row for group in rows for row in group])
            s.add_all([IngestEvent(run_id=i.journal[0], collection_id=collection_id, source=i.journal[1],
                                   sha256=i.sha256, outcome="indexed", reason=i.journal[2], faces=len(i.faces))
                       for i in images if i.journal is not None])
            try:
                s.commit()
            except IntegrityError as exc:
                raise _duplicate(images) from exc
            return [[row.id for row in group] for group in rows]

    def journal(self, run_id: str, collection_id: int, source: str, outcome: str, reason: str = "",
                sha256: str | None = None, faces: int = 0) -> None:
        with self.session() as s:
            s.add(IngestEvent(run_id=run_id, collection_id=collection_id, source=source, sha256=sha256,
                              outcome=outcome, reason=reason, faces=faces))
            s.commit()

    # -- reading ----------------------------------------------------------------------------------

    def faces_stamp(self, collection_id: int) -> tuple[int, int]:
        """(count, max id) of a collection's faces: changes on any insert or delete (ids never repeat)."""
        with self.session() as s:
            row = s.execute(select(func.count(FaceRecord.id), func.max(FaceRecord.id))
                            .where(FaceRecord.collection_id == collection_id)).one()
            return int(row[0]), int(row[1] or 0)

    def face_ids(self, collection_id: int) -> np.ndarray:
        with self.session() as s:
            ids = s.scalars(select(FaceRecord.id).where(FaceRecord.collection_id == collection_id))
            return np.fromiter(ids, dtype=np.int64)

    def iter_embeddings(self, collection_id: int, ids: np.ndarray | None = None,
                        chunk: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids, vectors) in chunks: what the index is rebuilt from."""
        with self.session() as s:
            query = select(FaceRecord.id, FaceRecord.embedding).where(FaceRecord.collection_id == collection_id)
            if ids is not None:
                query = query.where(FaceRecord.id.in_([int(i) for i in ids]))
            result = s.execute(query.order_by(FaceRecord.id)).yield_per(chunk)
            for part in result.partitions(chunk):
                yield (np.array([r[0] for r in part], dtype=np.int64),
                       np.stack([np.frombuffer(r[1], dtype="<f4") for r in part]))

    def embeddings_of(self, face_ids: list[int]) -> dict[int, np.ndarray]:
        with self.session() as s:
            rows = s.execute(select(FaceRecord.id, FaceRecord.embedding).where(FaceRecord.id.in_(face_ids)))
            return {r[0]: np.frombuffer(r[1], dtype="<f4").copy() for r in rows}

    def faces(self, face_ids: list[int]) -> dict[int, FaceInfo]:
        if not face_ids:
            return {}
        with self.session() as s:
            rows = s.execute(
                select(FaceRecord, ImageRecord, Collection.name)
                .join(ImageRecord, FaceRecord.image_id == ImageRecord.id)
                .join(Collection, FaceRecord.collection_id == Collection.id)
                .where(FaceRecord.id.in_([int(i) for i in face_ids]))
            )
            return {f.id: FaceInfo(f.id, f.image_id, f.collection_id, name, f.face_index,
                                   (f.x1, f.y1, f.x2, f.y2), f.quality,
                                   tuple(filter(None, f.quality_issues.split(","))), image.source, image.sha256,
                                   f.thumbnail, image.media, f.timestamp_s, f.track_id, f.frame,
                                   (image.width, image.height),
                                   (f.track_start_s, f.track_end_s) if f.track_start_s is not None else None,
                                   image.rotation or 0)
                    for f, image, name in rows}

    def track_faces(self, tracks: list[tuple[int, int]]) -> dict[tuple[int, int], list[int]]:
        """(video image id, track id) -> the ids of that track's faces, in time order."""
        out: dict[tuple[int, int], list[int]] = {}
        wanted = set(tracks)
        if not wanted:
            return out
        with self.session() as s:
            rows = s.execute(select(FaceRecord.image_id, FaceRecord.track_id, FaceRecord.id)
                             .where(FaceRecord.image_id.in_({image for image, _ in wanted}),
                                    FaceRecord.track_id.is_not(None))
                             .order_by(FaceRecord.timestamp_s, FaceRecord.id))
            for image_id, track_id, face_id in rows:
                if (image_id, track_id) in wanted:
                    out.setdefault((image_id, track_id), []).append(face_id)
        return out

    def image_faces(self, image_id: int) -> list[FaceInfo]:
        with self.session() as s:
            ids = list(s.scalars(select(FaceRecord.id).where(FaceRecord.image_id == image_id)))
        return sorted(self.faces(ids).values(), key=lambda f: f.face_index)

    def expired_images(self, now: datetime) -> dict[int, list[int]]:
        """collection id -> ids of its images ingested longer ago than its retention period."""
        with self.session() as s:
            rows = s.execute(select(Collection.id, Collection.retention_days, ImageRecord.id, ImageRecord.ingested_at)
                             .join(ImageRecord, ImageRecord.collection_id == Collection.id)
                             .where(Collection.retention_days.is_not(None)))
            out: dict[int, list[int]] = {}
            for collection_id, days, image_id, ingested_at in rows:
                if not valid_retention_days(days):
                    # Written around the checks (by hand in the database): that collection is
                    # left alone and reported, the sweep goes on for every other one.
                    log.error("collection %s has an invalid retention period (%r days): not swept",
                              collection_id, days)
                    continue
                if ingested_at < now - timedelta(days=days):
                    out.setdefault(collection_id, []).append(image_id)
            return out

    def image_face_ids(self, image_ids: list[int]) -> list[int]:
        with self.session() as s:
            return list(s.scalars(select(FaceRecord.id).where(FaceRecord.image_id.in_(image_ids))))

    def thumbnail_sources(self, collection_id: int) -> dict[str, tuple[str, tuple[float, float, float, float]]]:
        """thumbnail path -> (source photo, face box): what a lost thumbnail of a photo is cut again from.
        (A video face's thumbnail and frame came from decoding the video: they are not listed.)"""
        with self.session() as s:
            rows = s.execute(select(FaceRecord.thumbnail, ImageRecord.source, FaceRecord.x1, FaceRecord.y1,
                                    FaceRecord.x2, FaceRecord.y2)
                             .join(ImageRecord, FaceRecord.image_id == ImageRecord.id)
                             .where(FaceRecord.collection_id == collection_id, FaceRecord.thumbnail.is_not(None),
                                    FaceRecord.frame.is_(None)))
            return {r[0]: (r[1], (r[2], r[3], r[4], r[5])) for r in rows}

    def thumbnails(self) -> set[str]:
        """Every file under the thumbnail root the catalog refers to: face crops and video frames."""
        with self.session() as s:
            crops = s.scalars(select(FaceRecord.thumbnail).where(FaceRecord.thumbnail.is_not(None)))
            frames = s.scalars(select(FaceRecord.frame).where(FaceRecord.frame.is_not(None)))
            return set(crops) | set(frames)

    def face_counts_by_source(self, sources: list[str]) -> dict[str, tuple[int, int]]:
        """source -> (image id, faces) of the images recorded at these paths."""
        with self.session() as s:
            rows = s.execute(select(ImageRecord.source, ImageRecord.id, ImageRecord.face_count)
                             .where(ImageRecord.source.in_(sources))).all() if sources else []
            return {r[0]: (r[1], r[2]) for r in rows}

    # -- erasure -----------------------------------------------------------------------------------

    def remove_faces(self, face_ids: list[int], tombstone: Tombstone | None = None) -> RemovedFaces:
        """Delete faces; an image left without faces is deleted too (nothing of it remains,
        not even its rows in the ingest journal)."""
        ids = [int(i) for i in face_ids]
        with self.session() as s:
            rows = s.execute(select(FaceRecord.id, FaceRecord.image_id, FaceRecord.thumbnail,
                                    FaceRecord.collection_id, FaceRecord.frame).where(FaceRecord.id.in_(ids))).all()
            if not rows:
                return RemovedFaces([], [], [], [])
            image_ids = sorted({r[1] for r in rows})
            s.execute(delete(FaceRecord).where(FaceRecord.id.in_(ids)))
            s.flush()
            still_used = set(s.scalars(select(FaceRecord.image_id).where(FaceRecord.image_id.in_(image_ids))))
            emptied = [i for i in image_ids if i not in still_used]
            gone = s.execute(select(ImageRecord.source, ImageRecord.sha256).where(ImageRecord.id.in_(emptied))).all()
            sources, shas = [r[0] for r in gone], [r[1] for r in gone]
            s.execute(delete(ImageRecord).where(ImageRecord.id.in_(emptied)))
            self._forget(s, shas, tombstone)
            for image_id in set(image_ids) - set(emptied):
                image = s.get(ImageRecord, image_id)
                image.face_count = sum(1 for _ in s.scalars(select(FaceRecord.id)
                                                            .where(FaceRecord.image_id == image_id)))
            s.commit()
            return RemovedFaces([r[0] for r in rows], emptied, [f for r in rows for f in (r[2], r[4]) if f],
                                sorted({r[3] for r in rows}), sources, shas)

    def remove_images(self, image_ids: list[int], tombstone: Tombstone | None = None) -> RemovedFaces:
        face_ids = self.image_face_ids(image_ids)
        removed = self.remove_faces(face_ids, tombstone)
        ids = [int(i) for i in image_ids]
        with self.session() as s:  # images with zero faces have no face rows to cascade from
            rest = s.execute(select(ImageRecord.id, ImageRecord.source, ImageRecord.sha256)
                             .where(ImageRecord.id.in_(ids))).all()
            s.execute(delete(ImageRecord).where(ImageRecord.id.in_(ids)))
            self._forget(s, [r[2] for r in rest], tombstone)
            s.commit()
        return RemovedFaces(removed.face_ids, sorted(set(removed.image_ids) | {r[0] for r in rest}),
                            removed.thumbnails, removed.collection_ids,
                            list(removed.image_sources) + [r[1] for r in rest],
                            list(removed.image_sha256s) + [r[2] for r in rest])

    def remove_collection(self, collection_id: int, tombstone: Tombstone | None = None) -> RemovedFaces:
        with self.session() as s:
            face_rows = s.execute(select(FaceRecord.id, FaceRecord.thumbnail, FaceRecord.frame)
                                  .where(FaceRecord.collection_id == collection_id)).all()
            images = s.execute(select(ImageRecord.id, ImageRecord.source, ImageRecord.sha256)
                               .where(ImageRecord.collection_id == collection_id)).all()
            for table in (FaceRecord, ImageRecord, IngestEvent):
                s.execute(delete(table).where(table.collection_id == collection_id))
            s.execute(delete(Collection).where(Collection.id == collection_id))
            self._forget(s, [r[2] for r in images], tombstone)
            s.commit()
        return RemovedFaces([r[0] for r in face_rows], [r[0] for r in images],
                            [f for r in face_rows for f in (r[1], r[2]) if f], [collection_id], [r[1] for r in images],
                            [r[2] for r in images])

    @staticmethod
    def _forget(s: Session, shas: list[str], tombstone: Tombstone | None) -> None:
        """The journal rows of erased content go (they name the file); a keyed hash stays, if asked."""
        if not shas:
            return
        for lo in range(0, len(shas), 500):
            s.execute(delete(IngestEvent).where(IngestEvent.sha256.in_(shas[lo:lo + 500])))
        if tombstone is not None:
            tombstone(s, shas)

    def scrub(self, tables: tuple[str, ...] = ("faces", "images", "ingest_journal", "cluster_faces",
                                               "subject_faces", "match_decisions")) -> str:
        """After an erasure, make the database files forget the deleted rows.

        SQLite: every connection has ``secure_delete`` on (deleted content is zeroed); a
        TRUNCATE checkpoint then copies the zeroed pages into the database file and empties
        the WAL, which would otherwise keep older copies of the pages. PostgreSQL: ``VACUUM``
        of the touched tables (dead tuples become free space; see docs/accountability.md, "Erasure"
        for what that does and does not overwrite)."""
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                busy, _log, _done = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
            return "sqlite: checkpoint busy (another reader); the WAL is emptied at the next one" if busy \
                else "sqlite: secure_delete + WAL truncated"
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                for table in tables:
                    conn.execute(text(f'VACUUM "{table}"'))
            return f"postgresql: VACUUM {', '.join(tables)}"
        return f"{self.engine.dialect.name}: no scrub step"


def _duplicate(images: list[NewImage]) -> CatalogError:
    what = images[0].source if len(images) == 1 else f"one of {len(images)} images"
    return CatalogError(f"{what}: already in this collection (same content)")


def _collection_info(row: Collection, images: int = 0, faces: int = 0) -> CollectionInfo:
    return CollectionInfo(row.id, row.name, row.legal_basis, row.retention_days, row.keep_thumbnails,
                          row.pack, images, faces)

