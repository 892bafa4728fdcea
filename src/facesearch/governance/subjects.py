"""Subjects and galleries as a user may use them: roles, purpose and case, opt-out, the audit log.

- admins and investigators create galleries and subjects, enrol faces, search, match and
  decide; auditors see none of it (a subject's attributes hold a family's contact details)
  but read every record of it in the audit log;
- searching for a subject, identifying a probe among subjects and matching two galleries
  are searches: they need a purpose and a case reference, are refused (and the refusal
  audited) without them, and only reach the collections the user is granted;
- opted-out people are never enrolled, and are dropped from every result;
- a subject made from a collection's faces (enrolled from it, or from a cluster of it) carries
  that collection's grant: only users granted every such collection see, search for, edit,
  remove or decide on it, and identification and gallery matching leave it out for the
  others; to them it answers exactly as a subject that does not exist;
- confirm / reject decisions are audited as ``match.confirm`` / ``match.reject`` with the
  subject and the face (or other subject) ids. Labels and attributes are never written to
  the audit log: ids, hashes and counts only.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from sqlalchemy import select

from facesearch.catalog import CatalogError
from facesearch.catalog.schema import Collection
from facesearch.catalog.subjects import DecisionInfo, GalleryInfo, SubjectInfo
from facesearch.errors import FacesearchError, ImageError, NoFaceError
from facesearch.governance.accounts import UserInfo
from facesearch.governance.policy import Action, MissingJustification, PermissionDenied, justify
from facesearch.governance.schema import SubjectCollection
from facesearch.governance.service import Governance
from facesearch.governance.views import ViewRefused
from facesearch.search import SearchResult
from facesearch.search.subjects import DEFAULT_FUSION, IdentifyResult, MatchResult
from facesearch.services.subjects import EnrolReport, SubjectRemoval, Subjects


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SubjectGovernance:
    def __init__(self, gov: Governance, subjects: Subjects | None = None) -> None:
        self.gov = gov
        self.subjects = subjects or Subjects(gov.engine)
        self.audit = gov.audit

    def _require(self, actor: UserInfo) -> None:
        self.gov.require(actor, Action.SUBJECTS)

    # -- grants: a subject carries the grants of the collections it was made from ---------------------

    def restrictions(self) -> dict[int, set[str]]:
        """subject id -> the collections whose grant it carries (subjects without any are absent)."""
        out: dict[int, set[str]] = {}
        with self.gov.engine.catalog.session() as s:
            rows = s.execute(select(SubjectCollection.subject_id, Collection.name)
                             .join(Collection, Collection.id == SubjectCollection.collection_id))
            for subject_id, name in rows:
                out.setdefault(int(subject_id), set()).add(name)
        return out

    def hidden_subjects(self, actor: UserInfo) -> set[int]:
        """Subjects this actor may not see: they carry a grant the actor lacks."""
        granted = set(self.gov.accounts.granted_collections(actor))
        return {sid for sid, names in self.restrictions().items() if not names <= granted}

    def restrict(self, subject_id: int, collections: set[str]) -> None:
        """The subject carries these collections' grants from now on (added to any it carries)."""
        if not collections:
            return
        with self.gov.engine.catalog.session() as s:
            ids = s.scalars(select(Collection.id).where(Collection.name.in_(sorted(collections)))).all()
            have = set(s.scalars(select(SubjectCollection.collection_id)
                                 .where(SubjectCollection.subject_id == subject_id)))
            for collection_id in set(ids) - have:
                s.add(SubjectCollection(subject_id=subject_id, collection_id=collection_id))
            s.commit()

    def _visible(self, actor: UserInfo, subject_id: int) -> SubjectInfo:
        """The subject, if the actor may see it; else the very answer for a subject that does not exist."""
        self._require(actor)
        if subject_id in self.hidden_subjects(actor):
            raise CatalogError(f"no subject with id {subject_id}")
        return self.subjects.subject(subject_id)

    # -- galleries and subjects ------------------------------------------------------------------------

    def create_gallery(self, actor: UserInfo, name: str, description: str = "") -> GalleryInfo:
        self._require(actor)
        info = self.subjects.create_gallery(name, description, actor.username)
        self.audit.append(actor.username, "gallery_create", {"gallery": info.name, "gallery_id": info.id})
        return info

    def galleries(self, actor: UserInfo) -> list[GalleryInfo]:
        """Every gallery, its counts leaving out the subjects the actor may not see."""
        self._require(actor)
        galleries = self.subjects.galleries()
        hidden = self.subjects.store.subjects(ids=sorted(self.hidden_subjects(actor)))
        if not hidden:
            return galleries
        out = []
        for g in galleries:
            mine = [s for s in hidden if s.gallery_id == g.id]
            out.append(replace(g, subjects=g.subjects - len(mine), faces=g.faces - sum(s.faces for s in mine)))
        return out

    def add_subject(self, actor: UserInfo, gallery: str, label: str, attributes: dict | None = None,
                    collections: set[str] | None = None) -> SubjectInfo:
        """A new subject; ``collections``: the ones it is made from (it carries their grants)."""
        self._require(actor)
        if collections:
            self.gov.allowed_collections(actor, sorted(collections))  # only from collections you are granted
        info = self.subjects.add(gallery, label, attributes, actor.username)
        self.restrict(info.id, set(collections or ()))
        # the label and the attributes stay in the catalog: the log gets ids only
        self.audit.append(actor.username, "subject_add", {"subject_id": info.id, "gallery": info.gallery})
        return info

    def subject(self, actor: UserInfo, subject_id: int) -> SubjectInfo:
        return self._visible(actor, subject_id)

    def list_subjects(self, actor: UserInfo, gallery: str | None = None) -> list[SubjectInfo]:
        self._require(actor)
        hidden = self.hidden_subjects(actor)
        return [s for s in self.subjects.subjects(gallery) if s.id not in hidden]

    def update_attributes(self, actor: UserInfo, subject_id: int, attributes: dict) -> SubjectInfo:
        self._visible(actor, subject_id)
        info = self.subjects.store.update_attributes(subject_id, {str(k): str(v) for k, v in attributes.items()})
        self.audit.append(actor.username, "subject_update", {"subject_id": subject_id,
                                                             "attribute_count": len(attributes)})
        return info

    def enroll(self, actor: UserInfo, subject_id: int, photos: list[tuple[str, bytes]],
               face_index: int | None = None) -> EnrolReport:
        self._visible(actor, subject_id)
        report = self.subjects.enroll(subject_id, photos, face_index=face_index, created_by=actor.username,
                                      hide=self.gov.optouts.blocked)
        self._audit_enrol(actor, report)
        return report

    def enroll_faces(self, actor: UserInfo, subject_id: int, face_ids: list[int]) -> EnrolReport:
        self._visible(actor, subject_id)
        collections = {self.gov.face(actor, face_id).collection  # granted, present and not opted out, or 403
                       for face_id in face_ids}
        self.restrict(subject_id, collections)  # made from these collections: it carries their grants
        report = self.subjects.enroll_faces(subject_id, face_ids, created_by=actor.username,
                                            hide=self.gov.optouts.blocked)
        self._audit_enrol(actor, report)
        return report

    def _audit_enrol(self, actor: UserInfo, report: EnrolReport) -> None:
        self.audit.append(actor.username, "subject_enroll", {
            "subject_id": report.subject_id, "added": [f.id for f in report.added],
            "photo_sha256": report.photo_sha256, "from_faces": report.from_faces, "suppressed": report.suppressed,
            "failed": len(report.failed)})

    def remove(self, actor: UserInfo, subject_id: int, reason: str = "") -> SubjectRemoval:
        self._visible(actor, subject_id)
        removal = self.subjects.remove(subject_id)
        self.audit.append(actor.username, "subject_remove", {
            "subject_id": subject_id, "faces": removal.faces, "thumbnails_deleted": removal.thumbnails_deleted},
            reason)
        return removal

    def remove_gallery(self, actor: UserInfo, name: str, reason: str = "") -> SubjectRemoval:
        """Remove a whole registry: every subject in it, with its faces, thumbnails and decisions."""
        self.gov.require(actor, Action.ERASE)
        removal = self.subjects.remove_gallery(name)
        self.audit.append(actor.username, "gallery_remove", {
            "gallery": name, "subjects": removal.subjects, "faces": len(removal.faces),
            "thumbnails_deleted": removal.thumbnails_deleted}, reason)
        return removal

    def remove_face(self, actor: UserInfo, subject_face_id: int, reason: str = "") -> SubjectRemoval:
        face = self._subject_face(actor, subject_face_id)
        removal = self.subjects.remove_face(subject_face_id)
        self.audit.append(actor.username, "subject_face_remove", {
            "subject_id": face.subject_id, "faces": removal.faces,
            "thumbnails_deleted": removal.thumbnails_deleted}, reason)
        return removal

    def _subject_face(self, actor: UserInfo, subject_face_id: int):
        self._require(actor)
        try:
            face = self.subjects.store.face(subject_face_id)
        except CatalogError:
            face = None
        if face is None or face.subject_id in self.hidden_subjects(actor):
            raise CatalogError(f"no enrolled face with id {subject_face_id}")
        return face

    def thumbnail(self, actor: UserInfo, subject_face_id: int, token: str | None):
        """Path of an enrolled face's thumbnail, under a view grant that names it (issued by an audited
        subject view, enrolment or identification); a collection face's own is checked like any face."""
        self._require(actor)
        try:
            self.gov.views.check(actor, token, subject_face_id=subject_face_id)
            face = self._subject_face(actor, subject_face_id)
        except (ViewRefused, CatalogError) as exc:
            self.gov.refusals.refused(actor.username, "subject_thumbnail", subject_face_id)
            raise PermissionDenied(str(exc)) from None
        if face.thumbnail:
            return self.subjects.thumbnail_path(face)
        if face.face_id is not None:
            info = self.gov.face(actor, face.face_id)  # its collection still granted, not opted out
            if info.thumbnail:
                return self.gov.engine.thumbnails.path(info.thumbnail)
        raise CatalogError(f"enrolled face {subject_face_id} has no thumbnail")

    def shown(self, actor: UserInfo, subject_id: int, *, face_ids=(), subject_face_ids=(),
              action: str = "subject_view") -> str:
        """Record that the actor is shown these faces of a subject (its enrolled faces, its confirmed
        matches) and return the view grant the page's image URLs carry."""
        faces, subject_faces = sorted(set(face_ids)), sorted(set(subject_face_ids))
        purpose, case_ref = "subject review", f"subject {subject_id}"
        entry = self.audit.append(actor.username, action, {"subject_id": subject_id, "faces": faces,
                                                           "subject_faces": subject_faces}, purpose, case_ref)
        return self.gov.grant_for(actor, entry.id, purpose=purpose, case_ref=case_ref, face_ids=faces,
                                  subject_face_ids=subject_faces)

    # -- searches ---------------------------------------------------------------------------------------

    def _refused(self, actor: UserInfo, action: str, details: dict, exc: Exception, purpose: str,
                 case_ref: str) -> None:
        self.audit.append(actor.username, f"{action}_refused", details | {"reason": str(exc)}, purpose or "",
                          case_ref or "")

    def search(self, actor: UserInfo, subject_id: int, *, purpose: str, case_ref: str,
               collections: list[str] | None = None, top_k: int = 20, fusion: str | None = None,
               include_weaker: bool = False) -> SearchResult:
        """Where else does this subject appear? (the subject's faces against granted collections)"""
        self._require(actor)
        details = {"subject_id": subject_id, "collections": collections, "fusion": fusion,
                   "include_weaker": include_weaker}
        try:
            purpose, case_ref = justify(purpose, case_ref)
            targets = self.gov.allowed_collections(actor, collections)
            self._visible(actor, subject_id)
        except (PermissionDenied, MissingJustification, CatalogError) as exc:
            self._refused(actor, "subject_search", details, exc, purpose, case_ref)
            raise
        details["collections"] = targets
        if not targets:
            result = SearchResult(None, [], 0, 0.0, "no collection granted", [])
            result.warnings.append("you have no collection to search: ask an admin for a grant")
        else:
            result = self.subjects.search(subject_id, collections=targets, top_k=top_k, fusion=fusion)
            suppressed = self.gov.suppress_opted_out(result)
            withheld = result.withhold_weaker(include_weaker)
            details |= {"suppressed": suppressed, "confident": result.confident, "weaker_withheld": withheld,
                        "results": [[c.face_id, round(c.similarity, 4)] for c in result.candidates]}
        details["fusion"] = fusion or DEFAULT_FUSION
        result.audit_id = self.audit.append(actor.username, "subject_search", details, purpose, case_ref).id
        return result

    def identify(self, actor: UserInfo, probe: bytes, *, purpose: str, case_ref: str,
                 galleries: list[str] | None = None, top_k: int = 10, fusion: str | None = None,
                 face_index: int | None = None, probe_name: str = "probe") -> IdentifyResult:
        """Is the person in this photo one of the subjects?"""
        self._require(actor)
        details = {"probe_sha256": _sha256(probe), "galleries": galleries}
        try:
            purpose, case_ref = justify(purpose, case_ref)
            result = self.subjects.identify(probe, galleries=galleries, top_k=top_k, fusion=fusion,
                                            face_index=face_index, source=probe_name, hide=self.gov.optouts.blocked,
                                            exclude=self.hidden_subjects(actor))
        except (MissingJustification, ImageError, NoFaceError, CatalogError) as exc:
            self._refused(actor, "subject_identify", details, exc, purpose, case_ref)
            raise
        details |= {"galleries": result.galleries, "fusion": result.fusion, "confident": result.confident,
                    "results": [[c.subject_id, round(c.similarity, 4)] for c in result.candidates]}
        result.audit_id = self.audit.append(actor.username, "subject_identify", details, purpose, case_ref).id
        return result

    def match(self, actor: UserInfo, gallery_a: str, gallery_b: str, *, purpose: str, case_ref: str,
              top: int = 50, fusion: str | None = None) -> MatchResult:
        """Two registries against each other: ranked candidate pairs of subjects."""
        self._require(actor)
        details = {"galleries": [gallery_a, gallery_b]}
        try:
            purpose, case_ref = justify(purpose, case_ref)
            result = self.subjects.match(gallery_a, gallery_b, top=top, fusion=fusion, hide=self.gov.optouts.blocked,
                                         exclude=self.hidden_subjects(actor))
        except (MissingJustification, CatalogError) as exc:
            self._refused(actor, "gallery_match", details, exc, purpose, case_ref)
            raise
        details |= {"fusion": result.fusion, "pairs_compared": result.pairs_compared,
                    "results": [[p.subject_a, p.subject_b, round(p.similarity, 4)] for p in result.pairs]}
        self.audit.append(actor.username, "gallery_match", details, purpose, case_ref)
        return result

    # -- decisions --------------------------------------------------------------------------------------

    def decide(self, actor: UserInfo, subject_id: int, decision: str, *, face_id: int | None = None,
               other_subject_id: int | None = None, score: float | None = None, note: str = "",
               purpose: str = "", case_ref: str = "") -> DecisionInfo:
        """A reviewer confirms or rejects a candidate match; the decision is audited."""
        self._visible(actor, subject_id)
        if other_subject_id is not None:
            self._visible(actor, other_subject_id)
        if decision not in ("confirm", "reject"):
            raise FacesearchError("decision must be confirm or reject")
        if face_id is not None:
            self.gov.face(actor, face_id)  # a face you may not see cannot be decided on
        info = self.subjects.decide(subject_id, decision, actor.username, face_id=face_id,
                                    other_subject_id=other_subject_id, score=score, note=note)
        self.audit.append(actor.username, f"match.{decision}", {
            "decision_id": info.id, "subject_id": subject_id, "face_id": face_id,
            "other_subject_id": other_subject_id, "score": score, "note": note}, purpose or "", case_ref or "")
        return info

    def decisions(self, actor: UserInfo, subject_id: int) -> list[DecisionInfo]:
        self._visible(actor, subject_id)
        return self.subjects.decisions(subject_id)
