"""Ingest: files on disk -> faces in the catalog and the index, resumable and crash-safe.

Photos and videos: a video (by extension and container signature) is sampled at
``video_fps`` frames per second, its faces are tracked across frames and only each track's
best faces (at most 5, with their times) are indexed, with a stored frame to show.

Per file: read, hash (SHA-256 of the bytes), skip if the collection already holds that
content, decode (in a thread pool: Pillow releases the GIL), detect in batches, embed all
faces of a batch together, write thumbnails, then commit the image and its faces in one
transaction and add the vectors to the index. The index is saved every
``save_every_s`` and at the end; after a crash the catalog is the truth and the index is
reconciled from it, so a rerun resumes where the last committed image left off.

Streaming with bounded memory: decoding runs at most a batch (plus one file per decoding
thread) ahead of the detector, a bounded window rather than one task per file, photos are held at working
resolution (:func:`open_photo`) and dropped as soon as their faces are committed, so
memory does not depend on how many files a folder holds.

Failure isolation: anything that goes wrong with one file (unreadable, FIFO or device,
not UTF-8-named, vanished, out of memory in the detector, ...) is journalled with its
reason and the run goes on; a batch that fails is retried photo by photo so that only
the culprit is lost. Symbolic links that lead out of a given folder are not followed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facesearch.catalog import Catalog, CatalogError, CollectionInfo, NewFace, NewImage, ThumbnailStore
from facesearch.errors import ImageError, NotAnImageError, NotAVideoError
from facesearch.index import VectorIndex
from facesearch.pipeline import Face, FaceAnalyzer
from facesearch.pipeline.imageio import Photo, display_name, open_photo, read_file
from facesearch.pipeline.tracking import faces_from_video
from facesearch.pipeline.video import DEFAULT_SAMPLE_FPS, VIDEO_EXTENSIONS


@dataclass
class IngestSummary:
    run_id: str
    collection: str
    files_seen: int = 0
    images_indexed: int = 0
    faces_indexed: int = 0
    images_without_faces: int = 0
    videos_indexed: int = 0
    video_tracks: int = 0
    faces_too_small: int = 0
    faces_suppressed: int = 0
    already_indexed: int = 0
    duplicates_in_run: int = 0
    erased_earlier: int = 0  # content erased before: refused, and not journalled (the journal would name it)
    erased_readmitted: int = 0  # erased content an admin explicitly let back in (set by the engine)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): not images
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): broken images
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.images_indexed / self.seconds if self.seconds else 0.0

    @property
    def faces_per_s(self) -> float:
        return self.faces_indexed / self.seconds if self.seconds else 0.0


log = logging.getLogger(__name__)


@dataclass
class _Loaded:
    path: Path
    sha256: str | None = None
    size: int = 0
    photo: Photo | None = None
    error: ImageError | None = None
    video: bool = False  # decoded later, frame by frame, not here

    @property
    def name(self) -> str:
        return display_name(self.path)


@dataclass(frozen=True)
class _Refused:
    """A path found while listing that is not read at all, with the reason."""

    path: Path
    reason: str


def iter_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Every file under the given files/folders, recursively, in a stable order."""
    for entry in _walk(paths):
        if isinstance(entry, Path):
            yield entry


def _walk(paths: Iterable[str | Path]) -> Iterator[Path | _Refused]:
    """Files to read under ``paths``, and the entries refused while listing.

    Hidden files and folders are left out; every other non-folder entry is yielded (a FIFO
    or device is refused by the loader, with its reason, rather than silently dropped).
    Symbolic links are followed only while they stay inside the given folder.
    """
    for raw in paths:
        root = Path(raw).expanduser()
        if not root.is_dir():
            yield root  # a missing path is reported by the loader, not silently dropped
            continue
        real_root = root.resolve()
        for folder, dirs, files in os.walk(root, followlinks=False, onerror=None):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            here = Path(folder)
            for name in sorted(files + [d for d in dirs if (here / d).is_symlink()]):
                if name.startswith("."):
                    continue
                child = here / name
                if child.is_symlink():
                    target = child.resolve()
                    if not target.is_relative_to(real_root):
                        yield _Refused(child, "symbolic link leads out of the folder: not followed")
                        continue
                    if target.is_dir():
                        continue  # its files are listed where they really are
                yield child


def _load(path: Path | _Refused) -> _Loaded:
    """Read, hash and decode one file; never raises for a per-file problem."""
    if isinstance(path, _Refused):
        return _Loaded(path.path, error=NotAnImageError(display_name(path.path), path.reason))
    try:
        return _read(path)
    except ImageError as exc:  # already named by its display name (see _read)
        return _Loaded(path, error=exc)
    except MemoryError:
        return _Loaded(path, error=ImageError(display_name(path), "out of memory while decoding"))
    except Exception as exc:  # noqa: BLE001 - one bad file must never end the run
        log.warning("unexpected error reading a file: %s", type(exc).__name__)
        return _Loaded(path, error=ImageError(display_name(path), f"cannot read: {type(exc).__name__}: {exc}"))


def _read(path: Path) -> _Loaded:
    name = display_name(path)
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        raise NotAnImageError(name, "file name is not valid UTF-8: rename the file to index it") from None
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        try:
            info = path.stat()
        except OSError as exc:
            raise ImageError(name, f"cannot read: {exc.strerror or exc}") from exc
        if stat.S_ISREG(info.st_mode):
            sha, size = _hash_file(path)  # streamed: videos can be larger than memory
            return _Loaded(path, sha, size, video=True)
    data = read_file(path)
    loaded = _Loaded(path, hashlib.sha256(data).hexdigest(), len(data))
    try:
        loaded.photo = open_photo(data)
    except ImageError as exc:
        loaded.error = type(exc)(name, exc.reason)
    return loaded


def _hash_file(path: Path, chunk: int = 1 << 20) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _prefetched(pool: ThreadPoolExecutor, entries: Iterable[Path | _Refused], window: int) -> Iterator[_Loaded]:
    """``_load`` of each entry in order, at most ``window`` of them decoded ahead."""
    pending: deque[Future[_Loaded]] = deque()
    for entry in entries:
        pending.append(pool.submit(_load, entry))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class Ingestor:
    def __init__(self, analyzer: FaceAnalyzer | Callable[[], FaceAnalyzer], catalog: Catalog, index: VectorIndex,
                 thumbnails: ThumbnailStore, collection: CollectionInfo, *, workers: int = 2,
                 batch_images: int = 8, min_face_px: float = 16.0, save_every_s: float = 30.0,
                 suppress: Callable[[np.ndarray], np.ndarray] | None = None,
                 on_progress: Callable[[int, int, IngestSummary], None] | None = None,
                 lock: AbstractContextManager | None = None, video_fps: float = DEFAULT_SAMPLE_FPS,
                 erased: Callable[[str], bool] | None = None) -> None:
        # A function giving the analyzer is called when the first photo is analysed, not before:
        # the models may still be loading (Engine.load_analyzer_in_background) during the walk.
        self._analyzer = analyzer
        self.catalog = catalog
        self.index = index
        self.thumbnails = thumbnails
        self.collection = collection
        self.workers = max(1, workers)
        self.batch_images = batch_images
        self.min_face_px = min_face_px
        self.save_every_s = save_every_s
        # Given embeddings, returns a mask of faces that must not be indexed (opt-outs).
        self.suppress = suppress
        # Called after each file with (files done, files total, summary so far): job progress.
        self.on_progress = on_progress
        # Held while an image is committed and its vectors added, so readers never see half.
        self.lock = lock or nullcontext()
        self.video_fps = video_fps  # frames sampled per second of video
        self.erased = erased  # sha256 -> was this content erased earlier? (then it is refused)

    @property
    def analyzer(self) -> FaceAnalyzer:
        if callable(self._analyzer):
            self._analyzer = self._analyzer()
        return self._analyzer

    def run(self, paths: Iterable[str | Path], progress: bool = True) -> IngestSummary:
        summary = IngestSummary(uuid.uuid4().hex[:12], self.collection.name)
        files = list(_walk(paths))  # paths only: cheap even for a million files
        known = self.catalog.known_hashes(self.collection.id)
        seen_in_run: set[str] = set()
        log.info("ingest run %s into %s: %d file(s) to look at", summary.run_id, self.collection.name, len(files))
        start = last_save = time.monotonic()
        bar = tqdm(total=len(files), unit="img", desc=f"indexing into {self.collection.name}",
                   disable=not progress, dynamic_ncols=True)
        with ThreadPoolExecutor(self.workers) as pool:
            # Bounded: decoding stays a batch and a bit ahead of the detector, never a folder.
            loaded_iter = _prefetched(pool, files, self.batch_images + self.workers)
            batch: list[_Loaded] = []
            for loaded in loaded_iter:
                summary.files_seen += 1
                if not self._triage(loaded, known, seen_in_run, summary):
                    bar.update(1)
                elif loaded.video:
                    self._process_video(loaded, summary)
                    bar.update(1)
                else:
                    batch.append(loaded)
                if len(batch) >= self.batch_images:
                    self._process(batch, summary)
                    bar.update(len(batch))
                    batch = []
                    if time.monotonic() - last_save > self.save_every_s:
                        self.index.save()
                        last_save = time.monotonic()
                if self.on_progress:
                    self.on_progress(bar.n, len(files), summary)
                elapsed = max(time.monotonic() - start, 1e-9)
                bar.set_postfix_str(f"{summary.images_indexed / elapsed:.1f} img/s, "
                                    f"{summary.faces_indexed / elapsed:.1f} faces/s", refresh=False)
            if batch:
                self._process(batch, summary)
                bar.update(len(batch))
        bar.close()
        if self.on_progress:
            self.on_progress(len(files), len(files), summary)
        self.index.save()
        summary.seconds = time.monotonic() - start
        log.info("ingest run %s into %s done in %.1f s: %d image(s) and %d face(s) indexed, %d skipped, %d failed",
                 summary.run_id, self.collection.name, summary.seconds, summary.images_indexed,
                 summary.faces_indexed, len(summary.skipped), len(summary.failed))
        return summary

    def _triage(self, loaded: _Loaded, known: set[str], seen: set[str], summary: IngestSummary) -> bool:
        """Journal what will not be processed; True when the file goes on to detection."""
        source = loaded.name
        if loaded.sha256 is not None and loaded.sha256 in known:
            summary.already_indexed += 1
            return False
        if loaded.sha256 is not None and self.erased is not None and self.erased(loaded.sha256):
            summary.erased_earlier += 1
            return False
        if loaded.sha256 is not None and loaded.sha256 in seen:
            summary.duplicates_in_run += 1
            self.catalog.journal(summary.run_id, self.collection.id, source, "duplicate",
                                 "same content as another file of this run", loaded.sha256)
            return False
        if loaded.error is not None:
            self._reject(loaded, loaded.error, summary)
            return False
        seen.add(loaded.sha256)
        return True

    def _process(self, batch: list[_Loaded], summary: IngestSummary) -> None:
        analyzer = self.analyzer  # models that cannot be loaded end the run, they fail no photo
        try:
            all_faces = analyzer.analyze_photos([item.photo for item in batch], embed=True)
        except Exception as exc:  # noqa: BLE001 - find the one photo that fails, keep the others
            if len(batch) > 1:
                log.warning("a batch of %d photos failed (%s): retrying them one by one", len(batch),
                            type(exc).__name__)
                for item in batch:
                    self._process([item], summary)
                return
            self._reject(batch[0], _analysis_failure(exc), summary)
            return
        self._commit(batch, self._keep_groups([(faces, faces) for faces in all_faces], summary), summary)

    def _reject(self, item: _Loaded, problem: ImageError | str, summary: IngestSummary) -> None:
        """Journal a file that is not indexed: "skipped" when it is not a photo or video at all,
        "failed" when it is one that could not be processed; listed in the summary either way."""
        skipped = isinstance(problem, (NotAnImageError, NotAVideoError))
        reason = problem if isinstance(problem, str) else problem.reason
        (summary.skipped if skipped else summary.failed).append((item.name, reason))
        self.catalog.journal(summary.run_id, self.collection.id, item.name, "skipped" if skipped else "failed",
                             reason, item.sha256)
        item.photo = None

    def _keep(self, faces: list[Face], items: list, summary: IngestSummary) -> list:
        """The ``items`` (one per face) whose face is big enough and not opted out."""
        return self._keep_groups([(faces, items)], summary)[0]

    def _keep_groups(self, groups: list[tuple[list[Face], list]], summary: IngestSummary) -> list[list]:
        """:meth:`_keep` of each (faces, items) group, with one opt-out check for all of them."""
        sized = []
        for faces, items in groups:
            kept = [(f, item) for f, item in zip(faces, items) if min(f.width, f.height) >= self.min_face_px]
            summary.faces_too_small += len(faces) - len(kept)
            sized.append(kept)
        flat = [f for kept in sized for f, _ in kept]
        if flat and self.suppress is not None:
            blocked = self.suppress(np.stack([f.embedding for f in flat])).tolist()
            summary.faces_suppressed += sum(blocked)
            flags = iter(blocked)
            sized = [[pair for pair in kept if not next(flags)] for kept in sized]
        return [[item for _, item in kept] for kept in sized]

    def _process_video(self, item: _Loaded, summary: IngestSummary) -> None:
        source = item.name
        analyzer = self.analyzer
        try:
            video = faces_from_video(analyzer, item.path, fps=self.video_fps)
        except ImageError as exc:  # VideoError is one: a bad input file, journalled and skipped
            self._reject(item, exc, summary)
            return
        except Exception as exc:  # noqa: BLE001 - one bad video must never end the run
            self._reject(item, _analysis_failure(exc), summary)
            return
        tracked = [(track, tf) for track in video.tracks for tf in track.faces]
        kept = self._keep([tf.face for _, tf in tracked], tracked, summary)
        new_faces = []
        for rank, (track, tf) in enumerate(kept):
            thumb = frame = None
            if self.collection.keep_thumbnails:
                thumb = self.thumbnails.write(tf.crop, tf.crop_box, self.collection.id, item.sha256, rank)
                frame = self.thumbnails.write_frame(tf.frame, self.collection.id, item.sha256, rank)
            face = tf.face
            new_faces.append(NewFace(rank, face.box, face.landmarks.round(2).tolist(), face.det_score,
                                     face.quality.score, face.quality.issues, face.embedding, thumb,
                                     round(tf.timestamp_s, 3), track.track_id, frame,
                                     (round(track.start_s, 3), round(track.end_s, 3))))
        meta = video.metadata
        with self.lock:
            ids = self.catalog.add_image(self.collection.id, item.sha256, display_name(item.path.resolve()), meta.width,
                                         meta.height, item.size, new_faces, self.analyzer.pack.name,
                                         media="video", duration_s=meta.duration_s)
            if ids:
                self.index.add(np.array(ids, np.int64), np.stack([f.embedding for f in new_faces]))
        summary.videos_indexed += 1
        summary.video_tracks += len({track.track_id for track, _ in kept})
        summary.faces_indexed += len(ids)
        if not ids:
            summary.images_without_faces += 1
        self.catalog.journal(summary.run_id, self.collection.id, source, "indexed",
                             f"video: {len(video.tracks)} face track(s), {video.frames_sampled} frames sampled"
                             if ids else "video: no face found", item.sha256, len(ids))

    def _commit(self, batch: list[_Loaded], kept: list[list[Face]], summary: IngestSummary) -> None:
        """Thumbnails, then the batch's images, faces and journal entries in one catalog transaction
        (one commit per batch, not two per photo), then their vectors."""
        images = []
        for item, faces in zip(batch, kept):
            photo = item.photo
            assert photo is not None
            new_faces = []
            for rank, face in enumerate(faces):
                thumb = None
                if self.collection.keep_thumbnails:
                    # Thumbnails (112 px) come from the working pixels: they never need more.
                    thumb = self.thumbnails.write(photo.pixels, photo.working_box(face.box), self.collection.id,
                                                  item.sha256, rank)
                new_faces.append(NewFace(rank, face.box, face.landmarks.round(2).tolist(), face.det_score,
                                         face.quality.score, face.quality.issues, face.embedding, thumb))
            width, height = photo.full_size
            images.append(NewImage(item.sha256, display_name(item.path.resolve()), width, height, item.size,
                                   new_faces, rotation=photo.rotation,
                                   journal=(summary.run_id, item.name, "" if faces else "no face found")))
            item.photo = None  # free memory early
        try:
            ids = self._store(images, kept)
        except CatalogError:
            if len(images) == 1:
                raise
            # One of them is refused: store the others one by one until it is (as photo by photo).
            ids = [self._store([image], [faces])[0] for image, faces in zip(images, kept)]
        for group in ids:
            summary.images_without_faces += not group
            summary.images_indexed += 1
            summary.faces_indexed += len(group)

    def _store(self, images: list[NewImage], kept: list[list[Face]]) -> list[list[int]]:
        with self.lock:  # readers never see the rows without their vectors
            ids = self.catalog.add_images(self.collection.id, images, self.analyzer.pack.name)
            flat = [face_id for group in ids for face_id in group]
            if flat:
                self.index.add(np.array(flat, np.int64), np.stack([f.embedding for faces in kept for f in faces]))
        return ids


def _analysis_failure(exc: BaseException) -> str:
    """A journal reason for a photo the detector or embedder could not process."""
    if isinstance(exc, MemoryError) or "alloc" in str(exc).lower():
        return "out of memory while detecting faces in this photo"
    if isinstance(exc, ImageError):
        return exc.reason
    return f"face analysis failed: {type(exc).__name__}"
