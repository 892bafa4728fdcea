"""The Engine: one facesearch home opened for use. The CLI and the API are thin shells over it.

It wires the stages together in the one direction data flows (image -> faces ->
embeddings -> index/catalog -> results) and owns the invariants that span them: an index
always agrees with the catalog (reconciled on open, repaired by ``doctor``), erasure
removes vectors, rows and thumbnails together, and only one process writes at a time.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import MetaData

from facesearch.catalog import Catalog, CatalogError, CollectionInfo, RemovedFaces, ThumbnailStore, sqlite_url
from facesearch.catalog.erased import ErasureLedger, erasure_key
from facesearch.catalog.schema import utcnow
from facesearch.errors import FacesearchError
from facesearch.home import HomeConfig, WriteLock, load_config, private_umask, resolve_home
from facesearch.index import VectorIndex, open_index
from facesearch.ingest import Ingestor, IngestSummary
from facesearch.metrics import timed_search
from facesearch.models.calibration import Calibration, load_calibration
from facesearch.pipeline import Face, FaceAnalyzer, load_image
from facesearch.pipeline.imageio import ImageSource
from facesearch.search import Candidate, ProbeFace, SearchResult, false_match, pick_face, search_threshold
from facesearch.search.tracks import best_per_group, group_key

#: Hits fetched per candidate wanted, before a video track's frames fold into one candidate.
TRACK_FANOUT = 4


@dataclass
class ErasureReport:
    faces: list[int] = field(default_factory=list)
    images: list[int] = field(default_factory=list)
    thumbnails_deleted: int = 0
    collections: list[str] = field(default_factory=list)


@dataclass
class DoctorReport:
    collection: str
    catalog_faces: int
    index_faces: int
    missing_from_index: int  # in the catalog, not in the index
    orphans_in_index: int  # in the index, not in the catalog
    orphan_thumbnails: int = 0
    missing_thumbnails: int = 0
    repaired: bool = False
    unrepairable: int = 0  # missing thumbnails whose source photo is gone too

    @property
    def consistent(self) -> bool:
        return not (self.missing_from_index or self.orphans_in_index or self.orphan_thumbnails
                    or self.missing_thumbnails)


class Engine:
    def __init__(self, home: Path, config: HomeConfig, catalog: Catalog, analyzer_factory=None) -> None:
        self.home = home
        self.config = config
        self.catalog = catalog
        self.thumbnails = ThumbnailStore(home / "thumbs")
        self._indexes: dict[int, VectorIndex] = {}
        self._synced: dict[int, tuple[int, int]] = {}  # catalog stamp the index was last reconciled at
        # Serialises index mutation against searches when one process serves many threads.
        self.mutex = threading.RLock()
        self._analyzer: FaceAnalyzer | None = None
        self._analyzer_factory = analyzer_factory or (lambda: FaceAnalyzer(config.pack))
        self._analyzer_loading: Future[FaceAnalyzer] | None = None
        self._calibration: Calibration | None = None
        # Keyed hashes of erased content (the key is read on first use, from outside the catalog).
        self.erasure = ErasureLedger(catalog, lambda create: erasure_key(home, create))

    @classmethod
    def open(cls, home: str | os.PathLike | None = None, *, backend: str | None = None,
             database_url: str | None = None, milvus_uri: str | None = None, pack: str | None = None,
             faiss_storage: str | None = None, analyzer_factory: Callable[[], FaceAnalyzer] | None = None,
             schema: MetaData | None = None) -> Engine:
        """``analyzer_factory`` lets several engines in one process share loaded models; ``schema``
        (every model's metadata) lets a new catalog be created without running the migrations."""
        private_umask()  # the home holds biometric data: whatever this process writes is its user's only
        root = resolve_home(home)
        config = load_config(root, {"backend": backend, "database_url": database_url,
                                    "milvus_uri": milvus_uri, "pack": pack, "faiss_storage": faiss_storage})
        catalog = Catalog.open(config.database_url or sqlite_url(root / "catalog.db"), schema)
        return cls(root, config, catalog, analyzer_factory)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- parts, opened lazily -------------------------------------------------------------------

    @property
    def analyzer(self) -> FaceAnalyzer:
        if self._analyzer is None:
            loading, self._analyzer_loading = self._analyzer_loading, None
            self._analyzer = loading.result() if loading is not None else self._analyzer_factory()
        return self._analyzer

    def load_analyzer_in_background(self) -> None:
        """Start loading the models now, in a thread: compiling them (OpenVINO) runs in native code
        while this thread opens the collection and walks and decodes the first photos; the
        ``analyzer`` property waits for it (and raises what loading raised)."""
        if self._analyzer is not None or self._analyzer_loading is not None:
            return
        loading: Future[FaceAnalyzer] = Future()

        def load() -> None:
            try:
                loading.set_result(self._analyzer_factory())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever asks for the analyzer
                loading.set_exception(exc)

        self._analyzer_loading = loading
        threading.Thread(target=load, name="facesearch-load-models").start()

    def use_analyzer(self, analyzer: FaceAnalyzer) -> None:
        """Analyse with this one from now on (e.g. a :class:`~facesearch.ingest.distributed.RayAnalyzer`)."""
        self._analyzer = analyzer

    @property
    def calibration(self) -> Calibration | None:
        if self._calibration is None:
            self._calibration = load_calibration(self.config.pack, home=self.home)
        return self._calibration

    def _raw_index(self, collection: CollectionInfo) -> VectorIndex:
        if collection.id not in self._indexes:
            self._indexes[collection.id] = open_index(
                self.config.backend, directory=self.home / "index", collection_id=collection.id,
                milvus_uri=self.config.milvus_uri, **self._milvus_options())
        return self._indexes[collection.id]

    def _milvus_options(self) -> dict:
        """The backend's own options (named for Milvus, where they began): token; FAISS storage."""
        if self.config.backend == "faiss":
            return {"faiss_storage": self.config.faiss_storage}
        token = self.config.milvus_token
        return {"token": token} if self.config.backend == "milvus" and token else {}

    def index_of(self, collection: CollectionInfo) -> VectorIndex:
        """The collection's index, brought in line with the catalog (the source of truth)."""
        with self.mutex:
            return self._index_of_locked(collection)

    def _index_of_locked(self, collection: CollectionInfo) -> VectorIndex:
        index = self._raw_index(collection)
        # Another process (a CLI ingest or erase beside a server) may have changed the catalog:
        # a cheap stamp query tells, and only then is the index reconciled.
        stamp = self.catalog.faces_stamp(collection.id)
        if self._synced.get(collection.id) != stamp:
            self._reconcile(collection, index)
            self._synced[collection.id] = stamp
        return index

    def _reconcile(self, collection: CollectionInfo, index: VectorIndex) -> tuple[int, int]:
        catalog_ids = self.catalog.face_ids(collection.id)
        index_ids = index.ids()
        missing = np.setdiff1d(catalog_ids, index_ids)
        orphans = np.setdiff1d(index_ids, catalog_ids)
        if len(orphans):
            index.remove(orphans)
        if len(missing):
            for ids, vectors in self.catalog.iter_embeddings(collection.id, missing):
                index.add(ids, vectors)
        return len(missing), len(orphans)

    # -- collections ----------------------------------------------------------------------------

    def create_collection(self, name: str, legal_basis: str = "", retention_days: int | None = None,
                          keep_thumbnails: bool = True) -> CollectionInfo:
        # The retention rule (1 day to a century) lives with the catalog, which also applies it when sweeping.
        return self.catalog.create_collection(name, self.config.pack, legal_basis, retention_days, keep_thumbnails)

    def collections(self) -> list[CollectionInfo]:
        return self.catalog.collections()

    def collection(self, name: str) -> CollectionInfo:
        return self.catalog.collection(name)

    # -- writing --------------------------------------------------------------------------------

    @contextmanager
    def writing(self, wait: bool = True, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """Hold the home's writer lock (one lock object per holder: flock is per open file)."""
        lock = WriteLock(self.home)
        lock.acquire(wait=wait, on_wait=on_wait)
        try:
            yield
        finally:
            lock.release()

    def index(self, paths: Iterable[str | Path], collection: str, *, create: bool = True, workers: int = 2,
              progress: bool = True, wait: bool = True, on_wait: Callable[[str], None] | None = None,
              suppress: Callable[[np.ndarray], np.ndarray] | None = None, allow_erased: bool = False,
              **options) -> IngestSummary:
        """Ingest files. Content erased earlier is refused (counted as ``erased_earlier``) unless
        ``allow_erased``: then it is readmitted (counted as ``erased_readmitted``) and forgotten as erased.
        Folders holding the home itself are refused: our own files are never photos to index."""
        paths = list(paths)
        home, uploads = self.home.resolve(), self.uploads.resolve()
        for raw in paths:
            real = Path(raw).expanduser().resolve()
            inside = real.is_relative_to(home) and not real.is_relative_to(uploads)
            if inside or (real.is_dir() and home.is_relative_to(real)):
                raise CatalogError(f"{raw}: holds facesearch's own home ({self.home}); it cannot be indexed")
        with self.writing(wait, on_wait):
            try:
                info = self.collection(collection)
            except CatalogError:
                if not create:
                    raise
                info = self.create_collection(collection)
            if info.pack != self.config.pack:
                raise CatalogError(f"collection {collection!r} was built with pack {info.pack!r}; "
                                   f"this home uses {self.config.pack!r}: embeddings are not comparable")
            erased = self.erasure.checker()
            readmitted: list[str] = []
            if allow_erased:
                def check(sha256: str) -> bool:
                    if erased(sha256):
                        readmitted.append(sha256)
                    return False
            else:
                check = erased
            # The analyzer when first needed: models still loading keep loading during the folder walk.
            ingestor = Ingestor(lambda: self.analyzer, self.catalog, self.index_of(info), self.thumbnails, info,
                                workers=workers, suppress=suppress, lock=self.mutex, erased=check, **options)
            summary = ingestor.run(paths, progress=progress)
            summary.erased_readmitted = len(readmitted)
            self.erasure.forget(readmitted)
            self._synced[info.id] = self.catalog.faces_stamp(info.id)  # index holds every committed face
            return summary

    # -- searching --------------------------------------------------------------------------------

    def _targets(self, collections: list[str] | None) -> list[CollectionInfo]:
        if collections:
            return [self.collection(name) for name in dict.fromkeys(collections)]  # each once, in order
        return self.collections()

    def probe_face(self, probe: ImageSource, face_index: int | None = None,
                   source: str | None = None) -> tuple[Face, ProbeFace]:
        label = source or (str(probe) if isinstance(probe, (str, os.PathLike)) else "<probe>")
        return pick_face(self.analyzer, probe, face_index, label)

    def search(self, probe: ImageSource, *, collections: list[str] | None = None, top_k: int = 20,
               face_index: int | None = None, threshold: float | None = None,
               source: str | None = None) -> SearchResult:
        face, info = self.probe_face(probe, face_index, source)
        result = self.search_vector(face.embedding, collections=collections, top_k=top_k, threshold=threshold)
        result.probe = info
        if not info.usable:
            result.warnings.append(f"poor probe ({', '.join(info.quality_issues) or 'low quality'}): "
                                   "scores will be lower and misses more likely")
        return result

    @timed_search
    def search_vector(self, vector: np.ndarray, *, collections: list[str] | None = None, top_k: int = 20,
                      threshold: float | None = None, exclude: set[int] | None = None) -> SearchResult:
        targets = self._targets(collections)
        indexes = [self.index_of(info) for info in targets]
        with self.mutex:
            searched = sum(len(index) for index in indexes)
        # The threshold depends on how many faces are searched: FPIR 0.01 at this gallery size.
        limit, rule = search_threshold(self.calibration, threshold, searched)
        # One candidate per video track (facesearch.search.tracks): fetch more hits than top_k, and
        # more again while a long track's frames leave fewer than top_k groups and more hits exist.
        fetch = top_k * TRACK_FANOUT + len(exclude or ())
        while True:
            pool: list[tuple[float, int]] = []
            for index in indexes:
                with self.mutex:
                    hits = index.search(vector, fetch).row(0)
                pool.extend((score, face_id) for face_id, score in hits if not exclude or face_id not in exclude)
            rows = self.catalog.faces([face_id for _, face_id in pool])
            groups = best_per_group(pool, lambda f, rows=rows: group_key(rows[f].image_id, rows[f].track_id, f)
                                    if f in rows else None, top_k)  # no catalog row: never shown (doctor)
            if len(groups) >= top_k or fetch >= searched:
                break
            fetch *= 4
        tracks = self.catalog.track_faces([(rows[g.face_id].image_id, rows[g.face_id].track_id) for g in groups
                                           if rows[g.face_id].track_id is not None])
        candidates = []
        for group in groups:
            score, row = group.score, rows[group.face_id]
            track = tuple(tracks.get((row.image_id, row.track_id), ())) if row.track_id is not None else ()
            candidates.append(Candidate(len(candidates) + 1, row.id, round(score, 5), score >= limit,
                                        false_match(self.calibration, score, searched), row.collection,
                                        row.image_id, row.image_source, row.box, row.quality,
                                        str(self.thumbnails.path(row.thumbnail)) if row.thumbnail else None,
                                        row.media, row.timestamp_s, row.track_id, row.track_span,
                                        track, group.hits if track else 0))
        return SearchResult(None, [t.name for t in targets], searched, limit, rule, candidates)

    def similar(self, face_id: int, *, collections: list[str] | None = None, top_k: int = 20) -> SearchResult:
        vectors = self.catalog.embeddings_of([face_id])
        if face_id not in vectors:
            raise CatalogError(f"no face with id {face_id}")
        return self.search_vector(vectors[face_id], collections=collections, top_k=top_k, exclude={face_id})

    # -- erasure ----------------------------------------------------------------------------------

    def _erase(self, remove: Callable[..., RemovedFaces]) -> ErasureReport:
        """Remove rows (remembering erased content as keyed hashes in the same transaction),
        vectors (a new index generation is written, the old files deleted), thumbnails, video
        frames and held uploads; then make the database files forget the deleted rows."""
        with self.writing(), self.mutex:
            removed = remove(self.erasure.record)
            for collection_id in removed.collection_ids:
                index = self._indexes.get(collection_id)
                if index is None:
                    index = open_index(self.config.backend, directory=self.home / "index",
                                       collection_id=collection_id, milvus_uri=self.config.milvus_uri,
                                       **self._milvus_options())
                index.remove(removed.face_ids)
                index.save()
                self._synced.pop(collection_id, None)  # next use reconciles with the catalog in full
            deleted = self.thumbnails.remove(removed.thumbnails)
            self._remove_held_copies(removed.image_sources)
            if removed.face_ids or removed.image_ids:
                self.catalog.scrub()
            return ErasureReport(removed.face_ids, removed.image_ids, deleted)

    @property
    def uploads(self) -> Path:
        """Where photos uploaded through the API are kept (their catalog source points here)."""
        return self.home / "uploads"

    def _remove_held_copies(self, sources: list[str]) -> None:
        """Photos we hold a copy of (uploads) go with their catalog row; operator files stay."""
        root = self.uploads.resolve()
        for source in sources:
            path = Path(source)
            if path.is_relative_to(root):
                path.unlink(missing_ok=True)

    def drop_unused_uploads(self, paths: Iterable[str | Path]) -> int:
        """After an upload's ingest: our copies that show no indexed face are not kept (refused as
        erased earlier, or every face opted out or too small). A faceless image keeps its catalog
        row (under the copy's keyed-hash name: the same upload is then "already indexed"), not its
        pixels. Returns how many copies were deleted."""
        root = self.uploads.resolve()
        held = [p for p in (Path(p).resolve() for p in paths) if p.is_relative_to(root)]
        faces = self.catalog.face_counts_by_source([str(p) for p in held])
        dropped = 0
        for path in held:
            if faces.get(str(path), (0, 0))[1] == 0 and path.is_file():
                path.unlink()
                dropped += 1
        return dropped

    def erase_faces(self, face_ids: list[int]) -> ErasureReport:
        return self._erase(lambda tombstone: self.catalog.remove_faces(face_ids, tombstone))

    def erase_images(self, image_ids: list[int]) -> ErasureReport:
        return self._erase(lambda tombstone: self.catalog.remove_images(image_ids, tombstone))

    def expired_images(self, now: datetime | None = None) -> dict[str, list[int]]:
        """collection name -> images older than the collection's retention period (none without one)."""
        names = {info.id: info.name for info in self.collections()}
        expired = self.catalog.expired_images(now or utcnow())
        return {names[cid]: ids for cid, ids in expired.items() if cid in names}

    def erase_collection(self, name: str) -> ErasureReport:
        info = self.collection(name)
        report = self._erase(lambda tombstone: self.catalog.remove_collection(info.id, tombstone))
        shutil.rmtree(self.uploads / f"c{info.id}", ignore_errors=True)  # incl. uploads that never indexed
        self._raw_index(info).drop()
        self._indexes.pop(info.id, None)
        self._synced.pop(info.id, None)
        report.collections = [name]
        return report

    def erase_like(self, probe: ImageSource, min_score: float, *, collections: list[str] | None = None,
                   face_index: int | None = None, limit: int = 10_000) -> ErasureReport:
        """Erase every face scoring at least ``min_score`` against the probe's face."""
        face, _ = self.probe_face(probe, face_index)
        result = self.search_vector(face.embedding, collections=collections, top_k=limit, threshold=min_score)
        ids = [c.face_id for c in result.candidates if c.similarity >= min_score]
        return self.erase_faces(ids) if ids else ErasureReport()

    def _recut_thumbnails(self, info: CollectionInfo, missing: list[str]) -> int:
        """Cut lost thumbnails again from their source photos; returns how many could not be."""
        if not missing:
            return 0
        sources = self.catalog.thumbnail_sources(info.id)
        failed = 0
        for relative in missing:
            if relative not in sources:  # a video face's crop or frame: only re-indexing the video restores it
                failed += 1
                continue
            source, box = sources[relative]
            try:
                self.thumbnails.write_crop(load_image(source), box, relative)
            except FacesearchError:
                failed += 1
        return failed

    # -- maintenance ------------------------------------------------------------------------------

    def doctor(self, repair: bool = True) -> list[DoctorReport]:
        """Compare every index and the thumbnails with the catalog; repair from the catalog."""
        with self.writing() if repair else nullcontext():
            reports = []
            referenced = self.catalog.thumbnails()
            on_disk = self.thumbnails.all_files()
            for info in self.collections():
                index = self._raw_index(info)
                catalog_ids = self.catalog.face_ids(info.id)
                index_ids = index.ids()
                prefix = f"c{info.id}/"
                mine_disk = {p for p in on_disk if p.startswith(prefix)}
                mine_ref = {p for p in referenced if p.startswith(prefix)}
                report = DoctorReport(info.name, len(catalog_ids), len(index_ids),
                                      len(np.setdiff1d(catalog_ids, index_ids)),
                                      len(np.setdiff1d(index_ids, catalog_ids)),
                                      len(mine_disk - mine_ref), len(mine_ref - mine_disk))
                if repair and not report.consistent:
                    self._reconcile(info, index)
                    index.save()
                    self.thumbnails.remove(sorted(mine_disk - mine_ref))
                    report.unrepairable = self._recut_thumbnails(info, sorted(mine_ref - mine_disk))
                    report.repaired = report.unrepairable == 0
                reports.append(report)
            known = tuple(f"c{info.id}/" for info in self.collections())
            stray = sorted(p for p in on_disk if not p.startswith(known))
            if stray:  # left by a crash during the erasure of a whole collection
                report = DoctorReport("(no collection)", 0, 0, 0, 0, len(stray))
                if repair:
                    self.thumbnails.remove(stray)
                    report.repaired = True
                reports.append(report)
            return reports
