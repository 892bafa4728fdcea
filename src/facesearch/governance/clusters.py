"""Clusters of unknown faces as a user may use them: roles, collection grants, opt-out, the audit log.

- admins and investigators run clustering and read and edit clusters, but only of the
  collections they may search (a grant, as for search); auditors see none of it, and read
  every record of it in the audit log;
- a cluster outside your collections answers exactly as an absent one ("not in a collection
  you may see"): no probing of what exists;
- every run (``cluster_run``) and every edit (``cluster_merge``, ``cluster_split``,
  ``cluster_move``, ``cluster_unassign``, ``cluster_name``, ``cluster_to_subject``) is written
  to the audit log with ids and counts only: a cluster's name is typed by a person and stays
  in the catalog, as subjects' labels do;
- faces matching an opt-out request are never clustered, shown, moved or enrolled;
- suggestions ("these two clusters may be one person", "this face may belong to cluster N") are
  read like clusters, and a person's answer is an edit: accepting merges or moves (pinned),
  rejecting stops the suggestion; both are audited (``cluster_suggestion``) with the ids, the
  decision and the evidence the server recomputed (score and false-match rate), never a name.
"""

from __future__ import annotations

from facesearch.catalog import CatalogError
from facesearch.catalog.clusters import ClusterRow
from facesearch.catalog.subjects import SubjectInfo
from facesearch.governance.accounts import UserInfo
from facesearch.governance.policy import ADMIN, Action
from facesearch.governance.service import Governance, PermissionDenied
from facesearch.governance.subjects import SubjectGovernance
from facesearch.services.cluster_suggestions import ClusterSuggestions, SuggestionList
from facesearch.services.clusters import (
    ClusterDetail,
    ClusterError,
    ClusterOverview,
    ClusterRun,
    Clusters,
    EditResult,
    Hide,
    MergeResult,
)
from facesearch.services.subjects import EnrolReport


class ClusterGovernance:
    def __init__(self, gov: Governance, clusters: Clusters | None = None) -> None:
        self.gov = gov
        self.clusters = clusters or Clusters(gov.engine)
        self.audit = gov.audit
        self.suggestions_service = ClusterSuggestions(self.clusters)

    # -- checks ------------------------------------------------------------------------------------------

    def _hide(self) -> Hide | None:
        """The opt-out mask, or None while nobody has opted out (then nothing needs reading)."""
        return self.gov.optouts.blocked if len(self.gov.optouts.matrix()) else None

    def _collection(self, actor: UserInfo, collection: str) -> str:
        self.gov.require(actor, Action.CLUSTERS)
        if actor.role == ADMIN:
            self.gov.engine.collection(collection)  # admins see every collection: say when it does not exist
        self.gov.allowed_collections(actor, [collection])  # PermissionDenied without a grant
        return collection

    def _cluster(self, actor: UserInfo, cluster_id: int) -> ClusterRow:
        self.gov.require(actor, Action.CLUSTERS)
        try:
            row = self.clusters.store.cluster(cluster_id)
        except CatalogError:
            row = None
        if row is None or row.collection not in self.gov.accounts.granted_collections(actor):
            raise PermissionDenied(f"cluster {cluster_id} is not in a collection you may see")
        return row

    def _faces(self, actor: UserInfo, face_ids: list[int]) -> list[int]:
        self.gov.require(actor, Action.CLUSTERS)
        ids = list(dict.fromkeys(int(f) for f in face_ids))
        for face_id in ids:
            self.gov.face(actor, face_id)  # granted, present and not opted out, or 403
        return ids

    # -- runs and reading ----------------------------------------------------------------------------------

    def run(self, actor: UserInfo, collection: str, *, full: bool = False, wait: bool = True) -> ClusterRun:
        self._collection(actor, collection)
        run = self.clusters.run(collection, full=full, by=actor.username, hide=self._hide(), wait=wait)
        self.audit.append(actor.username, "cluster_run", {
            "collection": collection, "mode": run.mode, "faces_processed": run.faces_processed,
            "suppressed": run.suppressed, "clusters": run.clusters, "new_clusters": len(run.new_clusters),
            "merged": [list(m) for m in run.merged], "in_clusters": run.in_clusters, "unassigned": run.unassigned,
            "seconds": run.timings.get("total")})
        return run

    def overview(self, actor: UserInfo, collection: str, *, limit: int | None = None,
                 samples: int = 8) -> ClusterOverview:
        self._collection(actor, collection)
        return self.clusters.overview(collection, hide=self._hide(), limit=limit, samples=samples)

    def cluster(self, actor: UserInfo, cluster_id: int) -> ClusterDetail:
        self._cluster(actor, cluster_id)
        return self.clusters.cluster(cluster_id, hide=self._hide())

    def shown(self, actor: UserInfo, what: dict, face_ids: list[int]) -> str:
        """Record that the actor is shown these faces of a cluster listing (``cluster_view``) and return
        the view grant that the listing's thumbnail URLs carry."""
        faces = sorted(set(face_ids))
        purpose = "cluster review"
        case_ref = f"cluster {what['cluster_id']}" if "cluster_id" in what else f"collection {what.get('collection')}"
        entry = self.audit.append(actor.username, "cluster_view", what | {"faces": faces}, purpose, case_ref)
        return self.gov.grant_for(actor, entry.id, purpose=purpose, case_ref=case_ref, face_ids=faces)

    # -- edits -------------------------------------------------------------------------------------------------

    def merge(self, actor: UserInfo, cluster_ids: list[int], *, into: int | None = None) -> MergeResult:
        for cluster_id in dict.fromkeys([*cluster_ids, *([into] if into is not None else [])]):
            self._cluster(actor, cluster_id)
        result = self.clusters.merge(cluster_ids, into=into, by=actor.username)
        self.audit.append(actor.username, "cluster_merge", {
            "cluster_id": result.cluster_id, "merged": result.merged, "faces_moved": result.faces_moved})
        return result

    def split(self, actor: UserInfo, cluster_id: int, face_ids: list[int]) -> EditResult:
        self._cluster(actor, cluster_id)
        result = self.clusters.split(cluster_id, self._faces(actor, face_ids), by=actor.username)
        self.audit.append(actor.username, "cluster_split", {
            "cluster_id": cluster_id, "new_cluster_id": result.cluster_id, "faces": result.faces})
        return result

    def move(self, actor: UserInfo, face_ids: list[int], cluster_id: int) -> EditResult:
        self._cluster(actor, cluster_id)
        ids = self._faces(actor, face_ids)
        before = {f: self.clusters.cluster_of(f) for f in ids}
        result = self.clusters.move(ids, cluster_id, by=actor.username)
        self.audit.append(actor.username, "cluster_move", {
            "cluster_id": cluster_id, "faces": result.faces, "from": [before[f] for f in result.faces],
            "emptied": result.emptied})
        return result

    def unassign(self, actor: UserInfo, face_ids: list[int], *, cluster_id: int | None = None) -> EditResult:
        """Take faces out of their cluster (of ``cluster_id`` only, when given) and out of automatic runs."""
        self.gov.require(actor, Action.CLUSTERS)
        if cluster_id is not None:
            self._cluster(actor, cluster_id)
        ids = self._faces(actor, face_ids)
        before = {f: self.clusters.cluster_of(f) for f in ids}
        if cluster_id is not None:
            outside = [f for f in ids if before[f] != cluster_id]
            if outside:
                raise ClusterError(f"face {outside[0]} is not in cluster {cluster_id}")
        result = self.clusters.unassign(ids, by=actor.username)
        self.audit.append(actor.username, "cluster_unassign", {
            "faces": result.faces, "from": [before[f] for f in result.faces], "emptied": result.emptied})
        return result

    def name(self, actor: UserInfo, cluster_id: int, name: str | None) -> ClusterRow:
        self._cluster(actor, cluster_id)
        row = self.clusters.name(cluster_id, name)
        # the name a person typed stays in the catalog: the log says that it was named, not what
        self.audit.append(actor.username, "cluster_name", {"cluster_id": cluster_id, "named": row.name is not None})
        return row

    def to_subject(self, actor: UserInfo, cluster_id: int, gallery: str, *, label: str | None = None,
                   attributes: dict | None = None) -> tuple[SubjectInfo, EnrolReport]:
        """The cluster becomes a subject of ``gallery`` (created if missing): its best faces are enrolled."""
        row = self._cluster(actor, cluster_id)
        subjects = SubjectGovernance(self.gov)
        service = subjects.subjects
        linked = service.store.subjects(ids=[row.subject_id]) if row.subject_id is not None else []
        created_gallery = False
        if linked:
            subject = linked[0]
        else:
            label = (label or "").strip() or row.name
            if not label:
                raise CatalogError(f"cluster {cluster_id} has no name: name it, or give the subject a label")
            try:
                service.gallery(gallery)
            except CatalogError:
                subjects.create_gallery(actor, gallery)
                created_gallery = True
            # made from this collection's faces: the subject carries the collection's grant
            subject = subjects.add_subject(actor, gallery, label, attributes, collections={row.collection})
        enrolled = {f.face_id for f in service.faces(subject.id)}
        faces = [f for f in self.clusters.subject_faces(cluster_id, hide=self._hide()) if f not in enrolled]
        report = subjects.enroll_faces(actor, subject.id, faces) if faces else EnrolReport(subject.id)
        self.clusters.store.link_subject(cluster_id, subject.id, None if row.name else subject.label)
        self.audit.append(actor.username, "cluster_to_subject", {
            "cluster_id": cluster_id, "subject_id": subject.id, "gallery": subject.gallery,
            "gallery_created": created_gallery, "from_faces": report.from_faces, "suppressed": report.suppressed})
        return service.subject(subject.id), report

    # -- suggestions ---------------------------------------------------------------------------------------

    def suggestions(self, actor: UserInfo, collection: str, *, limit: int = 50) -> SuggestionList:
        self._collection(actor, collection)
        return self.suggestions_service.suggest(collection, hide=self._hide(), limit=limit)

    def suggestion_samples(self, actor: UserInfo, cluster_ids: set[int], per_cluster: int = 4) -> dict[int, list[int]]:
        """The best faces of each cluster a suggestion names (opted-out faces left out): what the
        suggestions show beside their evidence. Showing them is the caller's audited cluster view."""
        self.gov.require(actor, Action.CLUSTERS)
        hide = self._hide()
        return {c: list(self.clusters.cluster(c, hide=hide).cluster.samples[:per_cluster]) for c in cluster_ids}

    def _suggestion_record(self, kind: str, decision: str, ids: dict, score: float) -> dict:
        fmr = self.suggestions_service.evidence(score, 0).fmr
        return {"kind": kind, "decision": decision, **ids, "score": round(score, 4),
                "fmr": None if fmr != fmr else float(f"{fmr:.3g}")}  # NaN (no calibration) -> null

    def answer_merge(self, actor: UserInfo, cluster_a: int, cluster_b: int, accept: bool) -> MergeResult | None:
        """Accept (merge them, pinned) or reject (never suggest the pair again) "A and B may be one person"."""
        self._cluster(actor, cluster_a)
        self._cluster(actor, cluster_b)
        service = self.suggestions_service
        if accept:
            result, score = service.accept_merge(cluster_a, cluster_b, by=actor.username)
            self.audit.append(actor.username, "cluster_suggestion", self._suggestion_record(
                "merge", "accepted", {"clusters": sorted([cluster_a, cluster_b]), "cluster_id": result.cluster_id,
                                      "faces_moved": result.faces_moved}, score))
            return result
        score = service.reject_merge(cluster_a, cluster_b, by=actor.username)
        self.audit.append(actor.username, "cluster_suggestion", self._suggestion_record(
            "merge", "rejected", {"clusters": sorted([cluster_a, cluster_b])}, score))
        return None

    def answer_attach(self, actor: UserInfo, face_id: int, cluster_id: int, accept: bool) -> EditResult | None:
        """Accept (move the face in, pinned) or reject "this face may belong to cluster N"."""
        self._cluster(actor, cluster_id)
        face_id = self._faces(actor, [face_id])[0]
        service = self.suggestions_service
        if accept:
            before = self.clusters.cluster_of(face_id)
            result, score = service.accept_attach(face_id, cluster_id, by=actor.username)
            self.audit.append(actor.username, "cluster_suggestion", self._suggestion_record(
                "attach", "accepted", {"face_id": face_id, "cluster_id": cluster_id, "from": before,
                                       "emptied": result.emptied}, score))
            return result
        score = service.reject_attach(face_id, cluster_id, by=actor.username)
        self.audit.append(actor.username, "cluster_suggestion", self._suggestion_record(
            "attach", "rejected", {"face_id": face_id, "cluster_id": cluster_id}, score))
        return None
