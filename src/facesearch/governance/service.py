"""Governance: the engine as a user may use it. Every call names an actor; the role and the
collection grants decide what it may do; searches need a purpose and a case reference;
opt-outs are applied; and every action lands in the hash-chained audit log.

The server and the CLI both go through this layer: the CLI acts as the local operator
``local:<login>`` (an admin: whoever can read the home's files), so its searches, ingests,
erasures, opt-outs and collections are checked and recorded exactly as the server's. Who may
do what is the table of :mod:`facesearch.governance.policy`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from facesearch.catalog import CatalogError
from facesearch.catalog.store import CollectionInfo, FaceInfo
from facesearch.errors import FacesearchError, ImageError, NoFaceError
from facesearch.governance import policy
from facesearch.governance.accounts import Accounts, UserInfo
from facesearch.governance.audit import AuditEntry, AuditLog
from facesearch.governance.optout import OptOutList, optout_threshold
from facesearch.governance.policy import Action, MissingJustification, PermissionDenied, justify
from facesearch.governance.views import Grant, RefusalTally, ViewGrants, ViewRefused
from facesearch.ingest import IngestSummary
from facesearch.search import SearchResult, VerifyResult, verify_faces
from facesearch.services.engine import Engine, ErasureReport


@dataclass(frozen=True)
class PhotoAccess:
    path: Path
    image_id: int
    collection: str
    is_video_frame: bool = False  # the stored frame of a video face, not the operator's file
    rotation: int = 0  # degrees clockwise to turn the file so that the face boxes fit it (a sideways scan)


@dataclass
class RetentionReport:
    expired: dict[str, int]  # collection -> images past its retention period
    applied: bool
    images_erased: int = 0
    faces_erased: int = 0


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Governance:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.accounts = Accounts(engine.catalog)
        self.audit = AuditLog(engine.catalog)
        self.optouts = OptOutList(engine.catalog, engine.config.pack, optout_threshold(engine.calibration))
        self.views = ViewGrants(engine.catalog)
        self.refusals = RefusalTally(self.audit)

    # -- checks -----------------------------------------------------------------------------------

    @staticmethod
    def require(actor: UserInfo, action: Action) -> None:
        """The one role check: the table of :mod:`facesearch.governance.policy`."""
        policy.check(actor.username, actor.role, action)

    def allowed_collections(self, actor: UserInfo, requested: list[str] | None) -> list[str]:
        granted = self.accounts.granted_collections(actor)
        if not requested:
            return granted
        requested = list(dict.fromkeys(requested))  # naming one twice must not count its faces twice
        refused = [name for name in requested if name not in granted]
        if refused:
            raise PermissionDenied(f"{actor.username} has no grant for collection(s): {', '.join(refused)}")
        return requested

    # -- search and verify --------------------------------------------------------------------------

    def search(self, actor: UserInfo, probe: bytes, *, purpose: str, case_ref: str,
               collections: list[str] | None = None, top_k: int = 20, face_index: int | None = None,
               probe_name: str = "probe", threshold: float | None = None,
               include_weaker: bool = False) -> SearchResult:
        """Candidates above the threshold only, unless ``include_weaker`` (stated in the request, audited)."""
        self.require(actor, Action.SEARCH)
        try:
            purpose, case_ref = justify(purpose, case_ref)
            targets = self.allowed_collections(actor, collections)
            return self._search(actor, probe, purpose, case_ref, targets, top_k, face_index, probe_name, threshold,
                                include_weaker)
        except (PermissionDenied, MissingJustification, ImageError, NoFaceError) as exc:
            # A refused search is recorded too: who tried what, and why it was refused.
            self.audit.append(actor.username, "search_refused", {"probe_sha256": _sha256(probe),
                                                                 "collections": collections, "reason": str(exc)},
                              purpose or "", case_ref or "")
            raise

    def _search(self, actor: UserInfo, probe: bytes, purpose: str, case_ref: str, targets: list[str], top_k: int,
                face_index: int | None, probe_name: str, threshold: float | None = None,
                include_weaker: bool = False) -> SearchResult:
        details = {"probe_sha256": _sha256(probe), "collections": targets, "top_k": top_k,
                   "include_weaker": include_weaker}
        if not targets:
            result = SearchResult(None, [], 0, 0.0, "no collection granted", [])
            result.warnings.append("you have no collection to search: ask an admin for a grant")
        else:
            result = self.engine.search(probe, collections=targets, top_k=top_k, face_index=face_index,
                                        source=probe_name, threshold=threshold)
            details |= self._outcome(result, threshold, include_weaker)
        result.audit_id = self.audit.append(actor.username, "search", details, purpose, case_ref).id
        return result

    def _outcome(self, result: SearchResult, threshold: float | None, include_weaker: bool) -> dict:
        """Suppress opted-out candidates and withhold weaker ones; what the audit record says was returned."""
        suppressed = self.suppress_opted_out(result)
        withheld = result.withhold_weaker(include_weaker)
        return {"suppressed": suppressed, "confident": result.confident, "threshold_override": threshold,
                "weaker_withheld": withheld,
                "results": [[c.face_id, round(c.similarity, 4)] for c in result.candidates]}

    def similar(self, actor: UserInfo, face_id: int, *, purpose: str, case_ref: str,
                collections: list[str] | None = None, top_k: int = 20, include_weaker: bool = False) -> SearchResult:
        """A search whose probe is an indexed face: governed and audited like any search."""
        self.require(actor, Action.SEARCH)
        purpose, case_ref = justify(purpose, case_ref)
        self._face_collection_check(actor, face_id)
        targets = self.allowed_collections(actor, collections)
        result = self.engine.similar(face_id, collections=targets, top_k=top_k)
        result.audit_id = self.audit.append(actor.username, "similar", {
            "face_id": face_id, "collections": targets, "top_k": top_k, "include_weaker": include_weaker,
            **self._outcome(result, None, include_weaker)}, purpose, case_ref).id
        return result

    def suppress_opted_out(self, result: SearchResult) -> int:
        """Drop the candidates of people who opted out (ranks renumbered); how many were dropped."""
        if not result.candidates or len(self.optouts.matrix()) == 0:
            return 0
        vectors = self.engine.catalog.embeddings_of([c.face_id for c in result.candidates])
        keep = [c for c in result.candidates
                if not self.optouts.blocked(vectors[c.face_id][None, :])[0]]
        suppressed = len(result.candidates) - len(keep)
        result.candidates = [replace(c, rank=i + 1) for i, c in enumerate(keep)]
        return suppressed

    def verify(self, actor: UserInfo, image_a: bytes, image_b: bytes, *, purpose: str, case_ref: str,
               face_a: int | None = None, face_b: int | None = None,
               names: tuple[str, str] = ("a", "b")) -> VerifyResult:
        self.require(actor, Action.SEARCH)
        purpose, case_ref = justify(purpose, case_ref)
        result = verify_faces(self.engine.analyzer, self.engine.calibration, image_a, image_b,
                              face_a=face_a, face_b=face_b, names=names)
        self.audit.append(actor.username, "verify", {"probe_sha256": [_sha256(image_a), _sha256(image_b)],
                                                     "similarity": result.similarity,
                                                     "same_person": result.same_person}, purpose, case_ref)
        return result

    # -- viewing --------------------------------------------------------------------------------------

    def _face_collection_check(self, actor: UserInfo, face_id: int):
        self.require(actor, Action.SEARCH)
        info = self.engine.catalog.faces([face_id]).get(face_id)
        hidden = info is None or info.collection not in self.accounts.granted_collections(actor)
        if not hidden and len(self.optouts.matrix()):
            vector = self.engine.catalog.embeddings_of([face_id])[face_id]
            hidden = bool(self.optouts.blocked(vector[None, :])[0])  # opted out: never shown
        if hidden:
            # Same answer for "absent", "not yours" and "opted out": no probing of what exists.
            raise PermissionDenied(f"face {face_id} is not in a collection you may see")
        return info

    def _viewable(self, actor: UserInfo, face_id: int, token: str | None, kind: str):
        """The face, if ``token`` is the actor's view grant for it and its collection is (still) granted.

        Anything else is refused the same way and counted (aggregated) in the audit log."""
        self.require(actor, Action.SEARCH)
        try:
            grant = self.views.check(actor, token, face_id=face_id)
            info = self._face_collection_check(actor, face_id)  # a grant revoked since still stops it
        except (ViewRefused, PermissionDenied) as exc:
            self.refusals.refused(actor.username, kind, face_id)
            raise PermissionDenied(str(exc)) from None
        return grant, info

    def _record_view(self, actor: UserInfo, action: str, grant: Grant, info) -> None:
        self.audit.append(actor.username, action, {"face_id": info.id, "image_id": info.image_id,
                                                   "collection": info.collection, "view_grant": grant.id,
                                                   "context_record": grant.audit_id}, grant.purpose, grant.case_ref)

    def thumbnail(self, actor: UserInfo, face_id: int, token: str | None) -> Path:
        """A face's crop under a view grant. Not recorded again: the record that issued the grant
        (the search, the subject or cluster view) lists this face and the purpose already."""
        _grant, info = self._viewable(actor, face_id, token, "thumbnail")
        if not info.thumbnail:
            raise PermissionDenied(f"face {face_id} has no thumbnail (its collection keeps embeddings only)")
        return self.engine.thumbnails.path(info.thumbnail)

    def photo(self, actor: UserInfo, face_id: int, token: str | None) -> PhotoAccess:
        """The whole photo of a face under a view grant: each look is a ``view_photo`` record with the
        grant's purpose and case and the id of the record that issued the grant."""
        grant, info = self._viewable(actor, face_id, token, "photo")
        self._record_view(actor, "view_photo", grant, info)
        return PhotoAccess(self.photo_path(info), info.image_id, info.collection, info.is_video, info.rotation)

    def face_details(self, actor: UserInfo, face_id: int, token: str | None):
        """A face's details (box, quality, the other faces of its photo) under a view grant: recorded."""
        grant, info = self._viewable(actor, face_id, token, "details")
        self._record_view(actor, "view_face", grant, info)
        return info

    def photo_faces(self, info: FaceInfo) -> list[FaceInfo]:
        """The faces of the photo of a face just shown by :meth:`face_details` (their boxes, for the photo view)."""
        return self.engine.catalog.image_faces(info.image_id)

    def grant_view(self, actor: UserInfo, face_ids: list[int], *, purpose: str, case_ref: str) -> str:
        """Look at faces by id for a stated purpose and case (no search): audited, then granted."""
        self.require(actor, Action.SEARCH)
        ids = list(dict.fromkeys(int(f) for f in face_ids))
        try:
            purpose, case_ref = justify(purpose, case_ref)
            for face_id in ids:
                self._face_collection_check(actor, face_id)
        except (MissingJustification, PermissionDenied):
            self.refusals.refused(actor.username, "grant", ids[0] if ids else 0)  # aggregated, like any refusal
            raise
        entry = self.audit.append(actor.username, "view_grant", {"faces": ids}, purpose, case_ref)
        return self.views.issue(actor, entry.id, purpose=purpose, case_ref=case_ref, face_ids=ids)

    def grant_for(self, actor: UserInfo, context_record: int, *, purpose: str, case_ref: str, face_ids=(),
                  subject_face_ids=()) -> str:
        """A view grant for faces an audited search or view (``context_record``) just showed the actor."""
        return self.views.issue(actor, context_record, purpose=purpose, case_ref=case_ref, face_ids=face_ids,
                                subject_face_ids=subject_face_ids)

    def photo_path(self, info) -> Path:
        """The picture a face is shown in: its photo, or for a video face the frame stored at ingest."""
        if not info.is_video:
            return Path(info.image_source)
        if not info.frame:
            raise PermissionDenied(f"face {info.id} is from a video whose frames are not kept "
                                   "(its collection keeps embeddings only)")
        return self.engine.thumbnails.path(info.frame)

    def face(self, actor: UserInfo, face_id: int):
        return self._face_collection_check(actor, face_id)

    # -- the audit log ----------------------------------------------------------------------------------

    def read_audit(self, reader: UserInfo, *, export: bool = False, limit: int | None = None,
                   newest_first: bool = False, **filters: str | None) -> list[AuditEntry]:
        """Audit records matching ``filters`` (actor, action, case_ref, purpose, since, until), for an
        auditor; the read itself is recorded (``audit_read``, or ``audit_export``)."""
        self.require(reader, Action.READ_AUDIT)
        entries = self.audit.entries(**filters, limit=limit, newest_first=newest_first)
        self.audit.append(reader.username, "audit_export" if export else "audit_read", {"returned": len(entries)})
        return entries

    # -- collections ------------------------------------------------------------------------------------

    def collections(self, actor: UserInfo) -> list[CollectionInfo]:
        """The collections ``actor`` is granted (an admin: all)."""
        self.require(actor, Action.VIEW_COLLECTIONS)
        allowed = set(self.accounts.granted_collections(actor))
        return [c for c in self.engine.collections() if c.name in allowed]

    def create_collection(self, actor: UserInfo, name: str, legal_basis: str, retention_days: int | None = None,
                          keep_thumbnails: bool = True) -> CollectionInfo:
        """A new collection, recorded with its legal basis (from the API and the CLI alike)."""
        self.require(actor, Action.MANAGE_COLLECTIONS)
        info = self.engine.create_collection(name, legal_basis, retention_days, keep_thumbnails)
        self.audit.append(actor.username, "collection_create", {"collection": name, "legal_basis": legal_basis})
        return info

    # -- admin ------------------------------------------------------------------------------------------

    def ingest(self, actor: UserInfo, paths: list[str | Path], collection: str, *, allow_erased: bool = False,
               **options) -> IngestSummary:
        """Index files as ``actor`` (an admin). Content erased earlier is refused and counted unless
        ``allow_erased``: an explicit override, recorded in the ingest's audit record."""
        self.require(actor, Action.MANAGE_COLLECTIONS)
        try:
            summary = self.engine.index(paths, collection, suppress=self.optouts.blocked,
                                        allow_erased=allow_erased, **options)
        except BaseException as exc:
            # A run always leaves a record, also when it fails as a whole (what it committed
            # before failing stays, and is found by the next run's resume).
            self.audit.append(actor.username, "ingest_failed", {
                "collection": collection, "error": type(exc).__name__, "reason": str(exc)[:300]})
            raise
        details = {"collection": collection, "run_id": summary.run_id, "images": summary.images_indexed,
                   "faces": summary.faces_indexed, "suppressed": summary.faces_suppressed,
                   "failed": len(summary.failed), "skipped": len(summary.skipped),
                   "erased_earlier": summary.erased_earlier}
        if allow_erased:
            details |= {"allow_erased": True, "erased_readmitted": summary.erased_readmitted}
        self.audit.append(actor.username, "ingest", details)
        return summary

    def erase(self, actor: UserInfo, *, faces: list[int] | None = None, images: list[int] | None = None,
              collection: str | None = None, like: bytes | None = None, min_score: float | None = None,
              reason: str = "", probe_face: int | None = None) -> ErasureReport:
        self.require(actor, Action.ERASE)
        if faces:
            report = self.engine.erase_faces(faces)
        elif images:
            report = self.engine.erase_images(images)
        elif collection:
            report = self.engine.erase_collection(collection)
        elif like is not None and min_score is not None:
            report = self.engine.erase_like(like, min_score, face_index=probe_face)
        else:
            raise FacesearchError("say what to erase: faces, images, a collection, or a probe with a minimum score")
        # The probe is usually a photo of the person erased: named by its keyed hash only, so the
        # record (which can never be rewritten) does not keep the plain SHA-256 of erased content.
        self.audit.append(actor.username, "erase", {
            "faces": report.faces, "images": report.images, "collections": report.collections,
            "thumbnails_deleted": report.thumbnails_deleted,
            "probe_keyed_hash": self.engine.erasure.keyed_bytes(like) if like is not None else None,
            "min_score": min_score}, reason)
        return report

    def enforce_retention(self, actor: UserInfo, *, apply: bool, now=None) -> RetentionReport:
        """Images kept longer than their collection's retention period: listed, or erased (and audited)."""
        self.require(actor, Action.ERASE)
        expired = self.engine.expired_images(now)
        report = RetentionReport({name: len(ids) for name, ids in expired.items()}, apply)
        if apply and expired:
            erased = self.engine.erase_images([i for ids in expired.values() for i in ids])
            report.faces_erased, report.images_erased = len(erased.faces), len(erased.images)
            self.audit.append(actor.username, "retention", {
                "images_per_collection": report.expired, "faces": erased.faces, "images": erased.images,
                "thumbnails_deleted": erased.thumbnails_deleted}, "retention period expired")
        return report

    def opt_out(self, actor: UserInfo, probe: bytes, reference: str, face_index: int | None = None) -> int:
        """Register a person who asked not to be found (on their behalf, by an admin)."""
        self.require(actor, Action.ERASE)
        face, _ = self.engine.probe_face(probe, face_index, "opt-out request")
        optout_id = self.optouts.add(face.embedding, reference, actor.username)
        removed = self._unenrol_opted_out()
        self.audit.append(actor.username, "opt_out", {"optout_id": optout_id, "probe_sha256": _sha256(probe),
                                                      "threshold": self.optouts.threshold,
                                                      "subject_faces_removed": removed}, "", reference)
        return optout_id

    def _unenrol_opted_out(self) -> list[int]:
        """Faces enrolled in subjects before an opt-out are removed (embedding, thumbnail, the
        enrolment photo's name): a subject's faces are shown and searched with, unlike a
        collection's, which stay hidden by the opt-out filter and come back if it is withdrawn."""
        from facesearch.services.subjects import Subjects  # subjects build on the engine, not on governance

        subjects = Subjects(self.engine)
        rows = subjects.store.embeddings(pack=self.engine.config.pack)
        if not rows:
            return []
        ids = np.concatenate([r[1] for r in rows])
        blocked = self.optouts.blocked(np.concatenate([r[2] for r in rows]))
        removed = [int(i) for i in ids[blocked]]
        for subject_face_id in removed:
            subjects.remove_face(subject_face_id)
        if removed:
            self.engine.catalog.scrub()  # the enrolment photos' names leave the database files too
        return removed

    def opt_outs(self, actor: UserInfo) -> list[dict]:
        """The opt-out list (id, request reference, who, when): no photo, no name."""
        self.require(actor, Action.ERASE)
        return self.optouts.entries()

    def withdraw_opt_out(self, actor: UserInfo, optout_id: int, reason: str = "") -> None:
        """Withdraw an opt-out (the person asked, or it was registered in error): audited."""
        self.require(actor, Action.ERASE)
        entry = next((e for e in self.optouts.entries() if e["id"] == optout_id), None)
        if entry is None:
            raise CatalogError(f"no opt-out with id {optout_id}")
        self.optouts.remove(optout_id)
        self.audit.append(actor.username, "opt_out_withdraw", {"optout_id": optout_id}, reason, entry["reference"])
