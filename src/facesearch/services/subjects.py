"""Subjects and galleries on an open Engine: enrol people, search for them, match registries.

- a **gallery** is a registry of people (missing persons, a partner agency's list);
- a **subject** is one person in it, named or numbered, with free-form attributes kept in
  the catalog only, and one or more enrolled faces (from photos, or from faces already in a
  collection);
- :meth:`Subjects.search` looks for a subject in the indexed collections, fusing its faces
  (mean template by default, best-of selectable: see :mod:`facesearch.search.subjects`);
- :meth:`Subjects.identify` compares a probe photo with the subjects of galleries;
- :meth:`Subjects.match` compares two galleries and ranks candidate pairs of subjects;
- :meth:`Subjects.decide` records a reviewer's confirm / reject; confirmed matches stay linked.

Enrolled faces are not in any vector index: a gallery's faces are held as one matrix,
rebuilt from the catalog when its stamp changes. Removing a subject deletes its enrolled
embeddings and thumbnails. Who may do what, purpose and case, the audit log and opt-out
suppression are the governance layer's (:mod:`facesearch.governance.subjects`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from facesearch.catalog import CatalogError, ThumbnailStore
from facesearch.catalog.subjects import (
    DecisionInfo,
    GalleryInfo,
    NewSubjectFace,
    SubjectFaceInfo,
    SubjectInfo,
    SubjectStore,
)
from facesearch.errors import FacesearchError, ImageError
from facesearch.pipeline import choose_face, open_photo
from facesearch.pipeline.imageio import ImageSource
from facesearch.search import Candidate, SearchResult, false_match, search_threshold
from facesearch.search.subjects import (
    DEFAULT_FUSION,
    IdentifyResult,
    MatchResult,
    PairCandidate,
    SubjectCandidate,
    SubjectSet,
    check_fusion,
    mean_template,
    top_pairs,
)
from facesearch.search.tracks import one_per_track
from facesearch.services.engine import Engine

#: mask of the embeddings that must not be enrolled or shown (opt-out): (n, d) -> (n,) bool
Hide = Callable[[np.ndarray], np.ndarray]

FUSION_WORDS = {
    "mean": "mean template of the subject's enrolled faces",
    "best": "best of the subject's enrolled faces",
}


@dataclass
class EnrolReport:
    subject_id: int
    added: list[SubjectFaceInfo] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (photo, why)
    unreadable: list[str] = field(default_factory=list)  # photos of ``failed`` that did not decode at all
    suppressed: int = 0  # faces matching an opt-out request: not enrolled
    warnings: list[str] = field(default_factory=list)
    photo_sha256: list[str] = field(default_factory=list)
    from_faces: list[int] = field(default_factory=list)


@dataclass
class SubjectRemoval:
    subjects: list[int]
    faces: list[int]
    thumbnails_deleted: int


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _photo_bytes(photo: ImageSource) -> bytes | None:
    if isinstance(photo, bytes):
        return photo
    if isinstance(photo, (str, os.PathLike)):
        try:
            return Path(photo).read_bytes()
        except OSError:
            return None  # load_image raises the typed error
    return None


class Subjects:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = SubjectStore(engine.catalog)
        self.thumbnails = ThumbnailStore(engine.home / "subject_thumbs")
        self._sets: dict[int, tuple[tuple, SubjectSet]] = {}

    @property
    def pack(self) -> str:
        return self.engine.config.pack

    # -- galleries --------------------------------------------------------------------------------

    def create_gallery(self, name: str, description: str = "", created_by: str = "") -> GalleryInfo:
        name = (name or "").strip()
        if not name:
            raise CatalogError("a gallery needs a name")
        return self.store.create_gallery(name, self.pack, description, created_by)

    def galleries(self) -> list[GalleryInfo]:
        return self.store.galleries()

    def gallery(self, name: str) -> GalleryInfo:
        return self.store.gallery(name)

    def _check_pack(self, gallery: GalleryInfo) -> None:
        if gallery.pack != self.pack:
            raise CatalogError(f"gallery {gallery.name!r} was enrolled with pack {gallery.pack!r}; this home uses "
                               f"{self.pack!r}: embeddings are not comparable")

    # -- subjects -----------------------------------------------------------------------------------

    def add(self, gallery: str, label: str, attributes: dict | None = None, created_by: str = "",
            create_gallery: bool = False) -> SubjectInfo:
        try:
            info = self.gallery(gallery)
        except CatalogError:
            if not create_gallery:
                raise
            info = self.create_gallery(gallery, created_by=created_by)
        self._check_pack(info)
        attributes = {str(k): str(v) for k, v in (attributes or {}).items()}
        return self.store.create_subject(info.id, label, attributes, created_by)

    def subject(self, subject_id: int) -> SubjectInfo:
        return self.store.subject(subject_id)

    def subjects(self, gallery: str | None = None) -> list[SubjectInfo]:
        return self.store.subjects(self.gallery(gallery).id if gallery else None)

    def resolve(self, ref: str | int, gallery: str | None = None) -> SubjectInfo:
        """A subject by label within ``gallery`` (a numbered person's label may be digits), else by id;
        without a gallery: by id when ``ref`` is a number, else by its label in any gallery."""
        numeric = isinstance(ref, int) or str(ref).isdigit()
        if gallery:
            found = self.store.subjects(self.gallery(gallery).id, label=str(ref))
            if found:
                return found[0]
            if numeric:
                by_id = self.store.subjects(ids=[int(ref)])
                if by_id and by_id[0].gallery == gallery:
                    return by_id[0]
            raise CatalogError(f"no subject labelled {ref!r} in gallery {gallery!r}")
        if numeric:
            return self.subject(int(ref))
        found = self.store.subjects(None, label=str(ref))
        if not found:
            raise CatalogError(f"no subject labelled {ref!r}")
        if len(found) > 1:
            where = ", ".join(f"{s.id} in {s.gallery}" for s in found)
            raise CatalogError(f"{len(found)} subjects are labelled {ref!r} ({where}): give the id or --gallery")
        return found[0]

    def faces(self, subject_id: int) -> list[SubjectFaceInfo]:
        return self.store.faces(subject_id)

    def thumbnail_path(self, face: SubjectFaceInfo) -> Path | None:
        """The enrolled face's own thumbnail (faces enrolled from a collection use that face's)."""
        return self.thumbnails.path(face.thumbnail) if face.thumbnail else None

    # -- enrolment ----------------------------------------------------------------------------------

    def enroll(self, subject_id: int, photos: list[tuple[str, ImageSource]], *, face_index: int | None = None,
               created_by: str = "", hide: Hide | None = None) -> EnrolReport:
        """Enrol the chosen face (the largest central one, or ``face_index``) of each photo.

        ``photos``: (name shown and stored as the source, the photo as a path, bytes or array).
        A photo without a usable face is reported in ``failed`` and the others are still enrolled.
        """
        subject = self.subject(subject_id)
        self._check_pack(self.store.gallery_by_id(subject.gallery_id))
        report = EnrolReport(subject_id)
        known = {(f.sha256, f.face_index) for f in self.store.faces(subject_id)}
        new: list[NewSubjectFace] = []
        for name, photo in photos:
            data = _photo_bytes(photo)
            digest = _sha256(data) if data is not None else None
            try:
                decoded = open_photo(data if data is not None else photo)
                faces = self.engine.analyzer.analyze_photos([decoded])[0]
                face, rule = choose_face(faces, decoded.shape, name, face_index)
            except FacesearchError as exc:
                report.failed.append((name, str(exc)))
                if isinstance(exc, ImageError):  # not a picture (or a broken one), not a picture without a face
                    report.unreadable.append(name)
                continue
            if digest:
                report.photo_sha256.append(digest)
            if (digest, face.index) in known:
                report.failed.append((name, "this face of this photo is already enrolled for the subject"))
                continue
            if hide is not None and bool(hide(face.embedding[None, :])[0]):
                report.suppressed += 1
                continue
            if len(faces) > 1:
                report.warnings.append(f"{name}: {rule}")
            if not face.quality.usable:
                report.warnings.append(f"{name}: poor face ({', '.join(face.quality.issues) or 'low quality'}): "
                                       "it will pull the subject's scores down")
            thumb = None
            if digest:
                thumb = self.thumbnails.write_crop(decoded.pixels, decoded.working_box(face.box),
                                                   f"s{subject_id}/{digest[:2]}/{digest}_{face.index}.jpg")
            known.add((digest, face.index))
            new.append(NewSubjectFace(name, digest, face.index, face.box, face.quality.score, face.quality.issues,
                                      face.embedding, thumb))
        ids = self.store.add_faces(subject_id, new, self.pack, created_by) if new else []
        report.added = [self.store.face(i) for i in ids]
        return report

    def enroll_faces(self, subject_id: int, face_ids: list[int], *, created_by: str = "",
                     hide: Hide | None = None) -> EnrolReport:
        """Enrol faces already indexed in a collection (they stay there; erasing one removes it here too)."""
        subject = self.subject(subject_id)
        self._check_pack(self.store.gallery_by_id(subject.gallery_id))
        report = EnrolReport(subject_id)
        infos = self.engine.catalog.faces(face_ids)
        vectors = self.engine.catalog.embeddings_of(face_ids)
        already = {f.face_id for f in self.store.faces(subject_id)}
        new = []
        for face_id in dict.fromkeys(int(i) for i in face_ids):
            info = infos.get(face_id)
            if info is None:
                report.failed.append((f"face {face_id}", "no such face"))
                continue
            if face_id in already:
                report.failed.append((f"face {face_id}", "already enrolled for the subject"))
                continue
            if hide is not None and bool(hide(vectors[face_id][None, :])[0]):
                report.suppressed += 1
                continue
            report.from_faces.append(face_id)
            new.append(NewSubjectFace(f"face {face_id} ({info.collection})", info.image_sha256, info.face_index,
                                      info.box, info.quality, info.quality_issues, vectors[face_id], None, face_id))
        ids = self.store.add_faces(subject_id, new, self.pack, created_by) if new else []
        report.added = [self.store.face(i) for i in ids]
        return report

    # -- removal ------------------------------------------------------------------------------------

    def remove(self, subject_id: int) -> SubjectRemoval:
        """Remove a subject with its enrolled embeddings, thumbnails and decisions."""
        self.subject(subject_id)  # 404 when absent
        removed = self.store.remove_subjects([subject_id])
        deleted = self.thumbnails.remove(removed.thumbnails)
        self._prune(f"s{subject_id}")
        return SubjectRemoval(removed.subject_ids, removed.face_ids, deleted)

    def remove_face(self, subject_face_id: int) -> SubjectRemoval:
        self.store.face(subject_face_id)  # 404 when absent
        removed = self.store.remove_faces([subject_face_id])
        return SubjectRemoval([], removed.face_ids, self.thumbnails.remove(removed.thumbnails))

    def remove_gallery(self, name: str) -> SubjectRemoval:
        info = self.gallery(name)
        removed = self.store.remove_gallery(info.id)
        deleted = self.thumbnails.remove(removed.thumbnails)
        for subject_id in removed.subject_ids:
            self._prune(f"s{subject_id}")
        self._sets.pop(info.id, None)
        return SubjectRemoval(removed.subject_ids, removed.face_ids, deleted)

    def _prune(self, relative: str) -> None:
        folder = self.thumbnails.path(relative)
        if folder.is_dir():
            for sub in sorted(folder.rglob("*"), reverse=True):
                if sub.is_dir() and not any(sub.iterdir()):
                    sub.rmdir()
            if not any(folder.iterdir()):
                folder.rmdir()

    # -- scoring sets ---------------------------------------------------------------------------------

    def subject_set(self, gallery: GalleryInfo) -> SubjectSet:
        """The gallery's enrolled faces as one matrix, rebuilt when the catalog changed."""
        stamp = self.store.stamp(gallery.id)
        cached = self._sets.get(gallery.id)
        if cached is None or cached[0] != stamp:
            rows = self.store.embeddings(gallery_id=gallery.id, pack=self.pack)
            ids = np.concatenate([r[1] for r in rows]) if rows else np.zeros(0, np.int64)
            cached = (stamp, SubjectSet.build([(r[0], r[2]) for r in rows], face_ids=ids))
            self._sets[gallery.id] = cached
        return cached[1]

    @staticmethod
    def _visible(subjects: SubjectSet, hide: Hide | None, exclude: set[int] | None = None) -> np.ndarray:
        """Subjects none of whose faces is hidden (opt-out), and not excluded (not the user's to see)."""
        visible = np.ones(len(subjects), bool)
        if exclude and len(subjects):
            visible &= ~np.isin(np.asarray(subjects.ids), list(exclude))
        if hide is None or not len(subjects):
            return visible
        blocked = np.asarray(hide(subjects.faces), bool).astype(np.int64)
        return visible & (np.add.reduceat(blocked, subjects.starts) == 0)

    def _threshold(self, override: float | None, comparisons: int,
                   searched: str | None = None) -> tuple[float, str]:
        """The calibrated search threshold for this many face-to-face comparisons per search."""
        return search_threshold(self.engine.calibration, override, gallery_size=max(1, comparisons),
                                searched=searched)

    # -- search a subject in the collections ------------------------------------------------------------

    def search(self, subject_id: int, *, collections: list[str] | None = None, top_k: int = 20,
               fusion: str | None = None, threshold: float | None = None) -> SearchResult:
        """Faces in the collections like the subject's, one score per face (fused over the subject's faces).

        The faces the subject was enrolled from are left out (they are the subject)."""
        fusion = check_fusion(fusion)
        subject = self.subject(subject_id)
        groups = self.store.embeddings([subject_id], pack=self.pack)
        if not groups:
            raise CatalogError(f"subject {subject_id} ({subject.label}) has no enrolled face: enrol a photo first")
        vectors = groups[0][2]
        exclude = {f.face_id for f in self.store.faces(subject_id) if f.face_id is not None}
        if fusion == "mean" or len(vectors) == 1:
            result = self.engine.search_vector(mean_template(vectors), collections=collections, top_k=top_k,
                                               threshold=threshold, exclude=exclude)
            pool = result.candidates
        else:
            best: dict[int, Candidate] = {}
            for vector in vectors:
                result = self.engine.search_vector(vector, collections=collections, top_k=top_k,
                                                   threshold=threshold, exclude=exclude)
                for c in result.candidates:
                    if c.face_id not in best or c.similarity > best[c.face_id].similarity:
                        best[c.face_id] = c
            # each search gave one face per video track, not necessarily the same one: one per track again
            pool = one_per_track(sorted(best.values(), key=lambda c: (-c.similarity, c.face_id)))[:top_k]
        # k enrolled faces against n indexed faces count as k * n comparisons, whichever the fusion:
        # they decide the threshold and the false-match estimates (see facesearch.search.subjects)
        comparisons = result.faces_searched * len(vectors)
        # said with the number of faces searched that the result reports, and how it makes the comparisons
        searched = (f"{result.faces_searched:,} faces, each against {len(vectors)} enrolled faces "
                    f"({comparisons:,} comparisons)" if len(vectors) > 1 else None)
        result.threshold, result.threshold_rule = self._threshold(threshold, comparisons, searched)
        result.candidates = [replace(c, rank=i + 1, above_threshold=c.similarity >= result.threshold,
                                     false_match=false_match(self.engine.calibration, c.similarity, comparisons,
                                                             searched))
                             for i, c in enumerate(pool)]
        result.warnings.append(f"subject {subject_id} ({len(vectors)} enrolled face(s)); scores are the "
                               f"{FUSION_WORDS[fusion]}")
        return result

    # -- a probe photo against the subjects -------------------------------------------------------------

    def identify(self, probe: ImageSource, *, galleries: list[str] | None = None, top_k: int = 10,
                 fusion: str | None = None, face_index: int | None = None, threshold: float | None = None,
                 source: str | None = None, hide: Hide | None = None,
                 exclude: set[int] | None = None) -> IdentifyResult:
        fusion = check_fusion(fusion)
        face, info = self.engine.probe_face(probe, face_index, source)
        result = self.identify_vector(face.embedding, galleries=galleries, top_k=top_k, fusion=fusion,
                                      threshold=threshold, hide=hide, exclude=exclude)
        result.probe = info
        if not info.usable:
            result.warnings.append(f"poor probe ({', '.join(info.quality_issues) or 'low quality'}): "
                                   "scores will be lower and misses more likely")
        return result

    def identify_vector(self, vector: np.ndarray, *, galleries: list[str] | None = None, top_k: int = 10,
                        fusion: str | None = None, threshold: float | None = None,
                        hide: Hide | None = None, exclude: set[int] | None = None) -> IdentifyResult:
        fusion = check_fusion(fusion)
        targets = [self.gallery(g) for g in dict.fromkeys(galleries)] if galleries else self.galleries()
        pool: list[tuple[float, int, int, str]] = []  # (score, subject id, best enrolled face id, gallery)
        searched = comparisons = 0
        for gallery in targets:
            self._check_pack(gallery)
            subjects = self.subject_set(gallery)
            if not len(subjects):
                continue
            visible = self._visible(subjects, hide, exclude)
            scores = subjects.scores(vector[None, :], fusion)[0]
            best_rows = subjects.best_faces(vector)
            searched += int(visible.sum())
            comparisons += int(subjects.counts[visible].sum())  # every enrolled face counts, either fusion
            for s in np.argsort(-scores, kind="stable")[: top_k + int((~visible).sum())]:
                if visible[s]:
                    pool.append((float(scores[s]), int(subjects.ids[s]), int(subjects.face_ids[best_rows[s]]),
                                 gallery.name))
        pool.sort(key=lambda p: (-p[0], p[1]))
        pool = pool[:top_k]
        limit, rule = self._threshold(threshold, comparisons)
        infos = {s.id: s for s in self.store.subjects(ids=[p[1] for p in pool])}
        candidates = [SubjectCandidate(i + 1, subject_id, infos[subject_id].label, gallery_name, round(score, 5),
                                       score >= limit, false_match(self.engine.calibration, score, comparisons),
                                       infos[subject_id].faces, best_face)
                      for i, (score, subject_id, best_face, gallery_name) in enumerate(pool)]
        result = IdentifyResult(None, [g.name for g in targets], searched, comparisons, fusion, limit, rule,
                                candidates)
        if not targets:
            result.warnings.append("no gallery to search: create one and enrol subjects first")
        return result

    # -- two registries against each other ----------------------------------------------------------------

    def match(self, gallery_a: str, gallery_b: str, *, top: int = 50, fusion: str | None = None,
              threshold: float | None = None, hide: Hide | None = None,
              exclude: set[int] | None = None) -> MatchResult:
        """Ranked candidate pairs (subject of A, subject of B) scoring at or above the threshold.

        A gallery matched with itself lists each unordered pair once (duplicates in a registry)."""
        fusion = check_fusion(fusion)
        info_a, info_b = self.gallery(gallery_a), self.gallery(gallery_b)
        self._check_pack(info_a)
        self._check_pack(info_b)
        set_a, set_b = self.subject_set(info_a), self.subject_set(info_b)
        scores = set_a.pair_scores(set_b, fusion)
        visible = np.outer(self._visible(set_a, hide, exclude), self._visible(set_b, hide, exclude))
        same = info_a.id == info_b.id
        if same:
            visible &= np.triu(np.ones_like(visible), k=1).astype(bool)
        scores = np.where(visible, scores, -np.inf)
        pairs_compared = int(visible.sum())
        comparisons = int(np.outer(set_a.counts, set_b.counts)[visible].sum())  # face pairs, either fusion
        # each subject of A is one search of B: the threshold and the estimates are per such search
        searches = max(1, int(visible.any(axis=1).sum()))
        per_search = max(1, -(-comparisons // searches))
        limit, rule = self._threshold(threshold, per_search)
        cells = top_pairs(scores, limit, top)
        labels = {s.id: s.label for s in self.store.subjects(ids=[int(set_a.ids[r]) for r, _, _ in cells]
                                                            + [int(set_b.ids[c]) for _, c, _ in cells])}
        pairs = [PairCandidate(i + 1, int(set_a.ids[r]), labels[int(set_a.ids[r])], int(set_b.ids[c]),
                               labels[int(set_b.ids[c])], round(score, 5), score >= limit,
                               false_match(self.engine.calibration, score, per_search))
                 for i, (r, c, score) in enumerate(cells)]

        def counted(subjects: SubjectSet) -> int:  # subjects the caller may not see are not even counted
            if not exclude:
                return len(subjects)
            return int(np.isin(np.asarray(subjects.ids), list(exclude), invert=True).sum())

        result = MatchResult(info_a.name, info_b.name, counted(set_a), counted(set_b), pairs_compared, comparisons,
                             fusion, limit, rule, pairs)
        result.warnings.append(f"each subject of {info_a.name} is one search of {info_b.name} ({per_search:,} "
                               f"comparisons); scores compare the {FUSION_WORDS[fusion]}")
        if not pairs:
            result.warnings.append("no pair scores above the threshold")
        return result

    # -- reviewers' decisions -------------------------------------------------------------------------------

    def decide(self, subject_id: int, decision: str, decided_by: str, *, face_id: int | None = None,
               other_subject_id: int | None = None, score: float | None = None, note: str = "") -> DecisionInfo:
        self.subject(subject_id)
        if face_id is not None and face_id not in self.engine.catalog.faces([face_id]):
            raise CatalogError(f"no face with id {face_id}")
        if other_subject_id is not None:
            self.subject(other_subject_id)
        return self.store.add_decision(subject_id, decision, decided_by, face_id=face_id,
                                       other_subject_id=other_subject_id, score=score, note=note)

    def decisions(self, subject_id: int) -> list[DecisionInfo]:
        return self.store.decisions(subject_id)

    def links(self, subject_id: int) -> dict[tuple[str, int], DecisionInfo]:
        return self.store.links(subject_id)


__all__ = ["DEFAULT_FUSION", "EnrolReport", "SubjectRemoval", "Subjects"]
