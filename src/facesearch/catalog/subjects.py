"""Subjects in the catalog: galleries (registries of people), subjects with their enrolled faces,
and the confirm / reject decisions reviewers take on candidate matches.

A subject is a named or numbered person. Its enrolled faces (embedding, box, quality and a
thumbnail reference) belong to the subject's gallery, not to any searchable collection; a
face enrolled from a collection face keeps a reference to it and is deleted with it when
that face is erased. The subject's free-form attributes (case id, date last seen, contact
of the requesting family) live here only: they are never written to the audit log.

Tables (ORM classes in :mod:`facesearch.catalog.schema`) are created by migration ``0003_subjects``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import delete, func
from sqlalchemy import select as sql_select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from facesearch.catalog.schema import Gallery, MatchDecision, Subject, SubjectFace
from facesearch.catalog.store import Catalog, CatalogConflict, CatalogError

DECISIONS = ("confirm", "reject")


@dataclass(frozen=True)
class GalleryInfo:
    id: int
    name: str
    description: str
    pack: str
    created_by: str
    created_at: str
    subjects: int = 0
    faces: int = 0


@dataclass(frozen=True)
class SubjectInfo:
    id: int
    gallery_id: int
    gallery: str
    label: str
    attributes: dict
    created_by: str
    created_at: str
    faces: int = 0


@dataclass(frozen=True)
class NewSubjectFace:
    source: str
    sha256: str | None
    face_index: int
    box: tuple[float, float, float, float]
    quality: float
    quality_issues: tuple[str, ...]
    embedding: np.ndarray
    thumbnail: str | None = None
    face_id: int | None = None


@dataclass(frozen=True)
class SubjectFaceInfo:
    id: int
    subject_id: int
    face_id: int | None
    source: str
    sha256: str | None
    face_index: int
    box: tuple[float, float, float, float]
    quality: float
    quality_issues: tuple[str, ...]
    thumbnail: str | None
    created_at: str


@dataclass(frozen=True)
class DecisionInfo:
    id: int
    subject_id: int
    face_id: int | None
    other_subject_id: int | None
    decision: str
    score: float | None
    decided_by: str
    note: str
    decided_at: str


@dataclass(frozen=True)
class RemovedSubject:
    subject_ids: list[int]
    face_ids: list[int]  # subject face ids
    thumbnails: list[str]


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def _gallery_info(row: Gallery, subjects: int = 0, faces: int = 0) -> GalleryInfo:
    return GalleryInfo(row.id, row.name, row.description, row.pack, row.created_by, _iso(row.created_at),
                       subjects, faces)


def _face_info(row: SubjectFace) -> SubjectFaceInfo:
    return SubjectFaceInfo(row.id, row.subject_id, row.face_id, row.source, row.sha256, row.face_index,
                           (row.x1, row.y1, row.x2, row.y2), row.quality,
                           tuple(filter(None, row.quality_issues.split(","))), row.thumbnail, _iso(row.created_at))


def _decision_info(row: MatchDecision) -> DecisionInfo:
    return DecisionInfo(row.id, row.subject_id, row.face_id, row.other_subject_id, row.decision, row.score,
                        row.decided_by, row.note, _iso(row.decided_at))


class SubjectStore:
    """Database operations on galleries, subjects, enrolled faces and decisions."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def session(self) -> Session:
        return self.catalog.session()

    # -- galleries ----------------------------------------------------------------------------------

    def create_gallery(self, name: str, pack: str, description: str = "", created_by: str = "") -> GalleryInfo:
        with self.session() as s:
            row = Gallery(name=name, pack=pack, description=description, created_by=created_by)
            s.add(row)
            try:
                s.commit()
            except IntegrityError:
                # no chaining: the driver's error carries the row's values, and they must not reach a log
                raise CatalogConflict(f"gallery {name!r} already exists") from None
            return _gallery_info(row)

    def _gallery_counts(self, s: Session, row: Gallery) -> GalleryInfo:
        subjects = s.scalar(sql_select(func.count()).select_from(Subject).where(Subject.gallery_id == row.id)) or 0
        faces = s.scalar(sql_select(func.count()).select_from(SubjectFace)
                         .join(Subject, SubjectFace.subject_id == Subject.id)
                         .where(Subject.gallery_id == row.id)) or 0
        return _gallery_info(row, subjects, faces)

    def galleries(self) -> list[GalleryInfo]:
        with self.session() as s:
            return [self._gallery_counts(s, row) for row in s.scalars(sql_select(Gallery).order_by(Gallery.name))]

    def gallery(self, name: str) -> GalleryInfo:
        with self.session() as s:
            row = s.scalar(sql_select(Gallery).where(Gallery.name == name))
            if row is None:
                known = ", ".join(s.scalars(sql_select(Gallery.name).order_by(Gallery.name))) or "none yet"
                raise CatalogError(f"no gallery named {name!r} (galleries: {known})")
            return self._gallery_counts(s, row)

    def gallery_by_id(self, gallery_id: int) -> GalleryInfo:
        with self.session() as s:
            row = s.get(Gallery, gallery_id)
            if row is None:
                raise CatalogError(f"no gallery with id {gallery_id}")
            return self._gallery_counts(s, row)

    # -- subjects -------------------------------------------------------------------------------------

    def create_subject(self, gallery_id: int, label: str, attributes: dict | None = None,
                       created_by: str = "") -> SubjectInfo:
        label = (label or "").strip()
        if not label:
            raise CatalogError("a subject needs a label: a name or a number")
        with self.session() as s:
            gallery = s.get(Gallery, gallery_id)
            if gallery is None:
                raise CatalogError(f"no gallery with id {gallery_id}")
            row = Subject(gallery_id=gallery_id, label=label, attributes=json.dumps(attributes or {}, sort_keys=True),
                          created_by=created_by)
            s.add(row)
            gallery_name = gallery.name
            try:
                s.commit()
            except IntegrityError:
                # no chaining: the driver's error carries the row's values (the attributes: a family's
                # contact details), and they must not reach a log
                raise CatalogConflict(f"gallery {gallery_name!r} already has a subject labelled {label!r}: "
                                      "choose another label (a number will do)") from None
            return SubjectInfo(row.id, gallery_id, gallery.name, row.label, attributes or {}, row.created_by,
                               _iso(row.created_at), 0)

    def _subject_query(self):
        faces = (sql_select(SubjectFace.subject_id, func.count(SubjectFace.id).label("n"))
                 .group_by(SubjectFace.subject_id).subquery())
        return (sql_select(Subject, Gallery.name, func.coalesce(faces.c.n, 0))
                .join(Gallery, Subject.gallery_id == Gallery.id)
                .outerjoin(faces, faces.c.subject_id == Subject.id))

    @staticmethod
    def _subject_info(row: Subject, gallery: str, faces: int) -> SubjectInfo:
        return SubjectInfo(row.id, row.gallery_id, gallery, row.label, json.loads(row.attributes or "{}"),
                           row.created_by, _iso(row.created_at), int(faces))

    def subject(self, subject_id: int) -> SubjectInfo:
        with self.session() as s:
            found = s.execute(self._subject_query().where(Subject.id == subject_id)).first()
            if found is None:
                raise CatalogError(f"no subject with id {subject_id}")
            return self._subject_info(*found)

    def subjects(self, gallery_id: int | None = None, label: str | None = None,
                 ids: list[int] | None = None) -> list[SubjectInfo]:
        query = self._subject_query()
        if gallery_id is not None:
            query = query.where(Subject.gallery_id == gallery_id)
        if label is not None:
            query = query.where(Subject.label == label)
        if ids is not None:
            query = query.where(Subject.id.in_([int(i) for i in ids]))
        with self.session() as s:
            return [self._subject_info(*r) for r in s.execute(query.order_by(Subject.gallery_id, Subject.label))]

    def update_attributes(self, subject_id: int, attributes: dict) -> SubjectInfo:
        with self.session() as s:
            row = s.get(Subject, subject_id)
            if row is None:
                raise CatalogError(f"no subject with id {subject_id}")
            row.attributes = json.dumps(attributes, sort_keys=True)
            s.commit()
        return self.subject(subject_id)

    # -- enrolled faces ---------------------------------------------------------------------------------

    def add_faces(self, subject_id: int, faces: list[NewSubjectFace], pack: str, created_by: str = "") -> list[int]:
        with self.session() as s:
            if s.get(Subject, subject_id) is None:
                raise CatalogError(f"no subject with id {subject_id}")
            rows = [SubjectFace(subject_id=subject_id, face_id=f.face_id, source=f.source, sha256=f.sha256,
                                face_index=f.face_index, x1=f.box[0], y1=f.box[1], x2=f.box[2], y2=f.box[3],
                                quality=f.quality, quality_issues=",".join(f.quality_issues), pack=pack,
                                embedding=np.asarray(f.embedding, "<f4").tobytes(), thumbnail=f.thumbnail,
                                created_by=created_by) for f in faces]
            s.add_all(rows)
            s.commit()
            return [r.id for r in rows]

    def faces(self, subject_id: int) -> list[SubjectFaceInfo]:
        with self.session() as s:
            return [_face_info(r) for r in s.scalars(sql_select(SubjectFace).where(SubjectFace.subject_id == subject_id)
                                                     .order_by(SubjectFace.id))]

    def face(self, subject_face_id: int) -> SubjectFaceInfo:
        with self.session() as s:
            row = s.get(SubjectFace, subject_face_id)
            if row is None:
                raise CatalogError(f"no enrolled face with id {subject_face_id}")
            return _face_info(row)

    def embeddings(self, subject_ids: list[int] | None = None, gallery_id: int | None = None,
                   pack: str | None = None) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(subject id, (k,) enrolled face ids, (k, d) embeddings) per subject with a face, by subject id."""
        query = (sql_select(SubjectFace.subject_id, SubjectFace.id, SubjectFace.embedding)
                 .join(Subject, SubjectFace.subject_id == Subject.id))
        if subject_ids is not None:
            query = query.where(SubjectFace.subject_id.in_([int(i) for i in subject_ids]))
        if gallery_id is not None:
            query = query.where(Subject.gallery_id == gallery_id)
        if pack is not None:
            query = query.where(SubjectFace.pack == pack)
        grouped: dict[int, list[tuple[int, np.ndarray]]] = {}
        with self.session() as s:
            for subject_id, face_id, blob in s.execute(query.order_by(SubjectFace.subject_id, SubjectFace.id)):
                grouped.setdefault(subject_id, []).append((face_id, np.frombuffer(blob, "<f4")))
        return [(sid, np.array([i for i, _ in rows], np.int64), np.stack([v for _, v in rows]))
                for sid, rows in grouped.items()]

    def stamp(self, gallery_id: int) -> tuple[int, int, int]:
        """(subjects, faces, max face id) of a gallery: changes on any enrolment or removal."""
        with self.session() as s:
            row = s.execute(sql_select(func.count(SubjectFace.id), func.max(SubjectFace.id))
                            .join(Subject, SubjectFace.subject_id == Subject.id)
                            .where(Subject.gallery_id == gallery_id)).one()
            subjects = s.scalar(sql_select(func.count(Subject.id)).where(Subject.gallery_id == gallery_id))
            return int(subjects or 0), int(row[0]), int(row[1] or 0)

    # -- removal ----------------------------------------------------------------------------------------

    def remove_faces(self, subject_face_ids: list[int]) -> RemovedSubject:
        ids = [int(i) for i in subject_face_ids]
        with self.session() as s:
            rows = s.execute(sql_select(SubjectFace.id, SubjectFace.thumbnail).where(SubjectFace.id.in_(ids))).all()
            s.execute(delete(SubjectFace).where(SubjectFace.id.in_(ids)))
            s.commit()
        return RemovedSubject([], [r[0] for r in rows], [r[1] for r in rows if r[1]])

    def remove_subjects(self, subject_ids: list[int]) -> RemovedSubject:
        ids = [int(i) for i in subject_ids]
        with self.session() as s:
            rows = s.execute(sql_select(SubjectFace.id, SubjectFace.thumbnail)
                             .where(SubjectFace.subject_id.in_(ids))).all()
            found = list(s.scalars(sql_select(Subject.id).where(Subject.id.in_(ids))))
            # explicit deletes, not only ON DELETE CASCADE: the outcome must not depend on the driver
            s.execute(delete(MatchDecision).where(MatchDecision.subject_id.in_(ids)
                                                  | MatchDecision.other_subject_id.in_(ids)))
            s.execute(delete(SubjectFace).where(SubjectFace.subject_id.in_(ids)))
            s.execute(delete(Subject).where(Subject.id.in_(ids)))
            s.commit()
        return RemovedSubject(found, [r[0] for r in rows], [r[1] for r in rows if r[1]])

    def remove_gallery(self, gallery_id: int) -> RemovedSubject:
        with self.session() as s:
            ids = list(s.scalars(sql_select(Subject.id).where(Subject.gallery_id == gallery_id)))
        removed = self.remove_subjects(ids)
        with self.session() as s:
            s.execute(delete(Gallery).where(Gallery.id == gallery_id))
            s.commit()
        return removed

    # -- decisions --------------------------------------------------------------------------------------

    def add_decision(self, subject_id: int, decision: str, decided_by: str, *, face_id: int | None = None,
                     other_subject_id: int | None = None, score: float | None = None, note: str = "") -> DecisionInfo:
        if decision not in DECISIONS:
            raise CatalogError(f"decision must be one of {', '.join(DECISIONS)}")
        if (face_id is None) == (other_subject_id is None):
            raise CatalogError("a decision is about one face or one other subject")
        if other_subject_id == subject_id:
            raise CatalogError("a subject cannot be matched with itself")
        with self.session() as s:
            row = MatchDecision(subject_id=subject_id, face_id=face_id, other_subject_id=other_subject_id,
                                decision=decision, score=score, decided_by=decided_by, note=note)
            s.add(row)
            try:
                s.commit()
            except IntegrityError as exc:
                raise CatalogError("no such subject or face") from exc
            return _decision_info(row)

    def decisions(self, subject_id: int) -> list[DecisionInfo]:
        """Every decision about this subject (as either side), oldest first."""
        with self.session() as s:
            rows = s.scalars(sql_select(MatchDecision)
                             .where((MatchDecision.subject_id == subject_id)
                                    | (MatchDecision.other_subject_id == subject_id))
                             .order_by(MatchDecision.id))
            return [_decision_info(r) for r in rows]

    def current(self, subject_id: int) -> dict[tuple[str, int], DecisionInfo]:
        """The latest decision per target: ("face", id) or ("subject", id), seen from this subject."""
        latest: dict[tuple[str, int], DecisionInfo] = {}
        for d in self.decisions(subject_id):
            if d.face_id is not None:
                latest[("face", d.face_id)] = d
            else:
                other = d.other_subject_id if d.subject_id == subject_id else d.subject_id
                latest[("subject", other)] = d
        return latest

    def links(self, subject_id: int) -> dict[tuple[str, int], DecisionInfo]:
        """Confirmed matches that stand (the latest decision about them is a confirmation)."""
        return {k: d for k, d in self.current(subject_id).items() if d.decision == "confirm"}
