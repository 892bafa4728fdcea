"""REST routes for clusters of unknown faces: run clustering, list and show clusters, merge, split,
move and unassign faces, name a cluster, and turn it into a subject; suggestions ("these two
clusters may be one person", "this face may belong to cluster N") and a person's answer to one.

Showing a cluster listing or a cluster's faces is a look at faces: it is recorded
(``cluster_view``, the face ids shown) and the thumbnail and photo URLs carry the view grant
it issues (``?view=...``).

Included by ``create_app``; the role is checked by the dependencies of :mod:`facesearch.api.deps`
(governance's one permission table) before the body is read (403 whatever is sent), a collection
needs a grant, and everything goes through
:class:`~facesearch.governance.clusters.ClusterGovernance` (audited, opt-out applied). Face
thumbnails are served by the existing ``/api/faces/{id}/thumbnail`` (under the view grant).
"""


from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from facesearch.api.deps import Actor, Clusters, Cpu
from facesearch.api.deps import ClusterMember as Member
from facesearch.api.schemas import RowId, RowIdPath
from facesearch.api.urls import face_photo_url, face_thumbnail_url
from facesearch.governance.clusters import ClusterGovernance
from facesearch.services.cluster_suggestions import Evidence
from facesearch.services.clusters import ClusterDetail, ClusterInfo, ClusterRun

MAX_FACES_PER_EDIT = 1000


# -- the boundary's models -------------------------------------------------------------------------------


class RunRequest(BaseModel):
    full: bool = Field(False, description="re-cluster every face instead of placing only the new ones")


class RunOut(BaseModel):
    collection: str
    mode: str
    reason: str
    faces: int
    faces_processed: int
    suppressed: int
    clusters: int
    in_clusters: int
    unassigned: int
    new_clusters: list[int]
    grown: list[int]
    merged: list[tuple[int, int]]
    params: str
    graph: str
    timings: dict[str, float]
    stats: dict[str, int]


class ClusterOut(BaseModel):
    id: int
    collection: str
    name: str | None
    subject_id: int | None
    size: int
    pinned: int
    created_by: str
    created_at: str
    updated_at: str
    samples: list[int]
    sample_thumbnails: list[str]


class ClusterFaceOut(BaseModel):
    face_id: int
    pinned: bool
    quality: float
    assigned_by: str
    image_id: int
    thumbnail_url: str | None
    photo_url: str


class ClusterDetailOut(ClusterOut):
    faces: list[ClusterFaceOut]


class StateOut(BaseModel):
    mode: str
    last_face_id: int
    faces_processed: int
    ran_by: str
    ran_at: str


class OverviewOut(BaseModel):
    collection: str
    faces: int
    in_clusters: int
    unassigned: int
    total_clusters: int
    clusters: list[ClusterOut]
    last_run: StateOut | None


class FaceIds(BaseModel):
    face_ids: list[RowId] = Field(min_length=1, max_length=MAX_FACES_PER_EDIT)


class MergeRequest(BaseModel):
    cluster_ids: list[RowId] = Field(min_length=2, max_length=1000)
    into: RowId | None = Field(None, description="the cluster to keep (default: the largest)")


class MergeOut(BaseModel):
    cluster_id: int
    merged: list[int]
    faces_moved: int


class EditOut(BaseModel):
    cluster_id: int | None
    faces: list[int]
    emptied: list[int]


class NameRequest(BaseModel):
    name: str = Field(max_length=200, description="typed by a person; kept in the catalog, never in the audit log")


class ToSubjectRequest(BaseModel):
    gallery: str = Field(min_length=1, max_length=200, pattern=r"^[\w.\- ]+$")
    label: str | None = Field(None, max_length=200, description="the subject's name (default: the cluster's)")
    attributes: dict[str, str] = Field(default_factory=dict)


class ToSubjectOut(BaseModel):
    cluster_id: int
    subject_id: int
    gallery: str
    label: str
    enrolled: list[int]  # enrolled face ids of the subject
    from_faces: list[int]  # the cluster's face ids they came from
    suppressed: int
    failed: list[tuple[str, str]]


class EvidenceOut(BaseModel):
    score: float
    fmr: float | None
    look_alikes: float | None
    words: str


class MergeSuggestionOut(BaseModel):
    cluster_a: int
    cluster_b: int
    size_a: int
    size_b: int
    average: EvidenceOut
    best: EvidenceOut
    cross_neighbours: int
    sample_thumbnails_a: list[str]
    sample_thumbnails_b: list[str]


class AttachSuggestionOut(BaseModel):
    face_id: int
    cluster_id: int
    cluster_size: int
    best: EvidenceOut
    support: int
    other_clusters: list[int]
    thumbnail_url: str
    sample_thumbnails: list[str]


class SuggestionsOut(BaseModel):
    collection: str
    faces: int
    threshold: float
    threshold_fmr: float
    merges: list[MergeSuggestionOut]
    attaches: list[AttachSuggestionOut]


class MergeAnswer(BaseModel):
    cluster_a: int
    cluster_b: int
    accept: bool = Field(description="true: merge the two (a person's edit, pinned); false: never suggest again")


class AttachAnswer(BaseModel):
    face_id: int
    cluster_id: int
    accept: bool = Field(description="true: move the face in (pinned); false: never suggest it for this cluster")


class AnswerOut(BaseModel):
    accepted: bool
    cluster_id: int | None  # where the faces are after an accepted answer
    faces_moved: int


# -- conversions --------------------------------------------------------------------------------------------


def _cluster_out(c: ClusterInfo, token: str) -> ClusterOut:
    return ClusterOut(**{**c.__dict__, "samples": list(c.samples)},
                      sample_thumbnails=[face_thumbnail_url(f, token) for f in c.samples])


def _detail_out(d: ClusterDetail, token: str) -> ClusterDetailOut:
    faces = [ClusterFaceOut(face_id=m.face_id, pinned=m.pinned, quality=m.quality, assigned_by=m.assigned_by,
                            image_id=m.image_id,
                            thumbnail_url=face_thumbnail_url(m.face_id, token) if m.has_thumbnail else None,
                            photo_url=face_photo_url(m.face_id, token)) for m in d.faces]
    return ClusterDetailOut(**_cluster_out(d.cluster, token).model_dump(), faces=faces)


def _run_out(r: ClusterRun) -> RunOut:
    return RunOut(**r.to_dict())


# -- the routes ---------------------------------------------------------------------------------------------

router = APIRouter(tags=["clusters"])


@router.post("/api/collections/{name}/clusters/run", response_model=RunOut)
async def run_clustering(name: str, who: Member, clusters: Clusters, cpu: Cpu,
                         body: RunRequest | None = None) -> RunOut:
    """Cluster the collection's faces: the new ones only, after the first run (``full`` re-clusters all)."""
    # never waits for an ingest to finish: 409 while one runs
    return _run_out(await cpu.run(clusters.run, who.user, name, full=bool(body and body.full), wait=False))


@router.get("/api/collections/{name}/clusters", response_model=OverviewOut)
def list_clusters(name: str, who: Member, clusters: Clusters, limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
                  samples: Annotated[int, Query(ge=0, le=50)] = 8) -> OverviewOut:
    o = clusters.overview(who.user, name, limit=limit, samples=samples)
    token = clusters.shown(who.user, {"collection": name}, [f for c in o.clusters for f in c.samples])
    state = o.state
    return OverviewOut(collection=o.collection, faces=o.faces, in_clusters=o.in_clusters,
                       unassigned=o.unassigned, total_clusters=o.total_clusters,
                       clusters=[_cluster_out(c, token) for c in o.clusters],
                       last_run=StateOut(mode=state.mode, last_face_id=state.last_face_id,
                                         faces_processed=state.faces_processed, ran_by=state.ran_by,
                                         ran_at=state.ran_at) if state else None)


def detail(clusters: ClusterGovernance, who: Actor, cluster_id: int) -> ClusterDetailOut:
    d = clusters.cluster(who.user, cluster_id)
    token = clusters.shown(who.user, {"cluster_id": cluster_id, "collection": d.cluster.collection},
                           [m.face_id for m in d.faces])
    return _detail_out(d, token)


@router.get("/api/clusters/{cluster_id}", response_model=ClusterDetailOut)
def get_cluster(cluster_id: RowIdPath, who: Member, clusters: Clusters) -> ClusterDetailOut:
    return detail(clusters, who, cluster_id)


@router.post("/api/clusters/merge", response_model=MergeOut)
def merge_clusters(body: MergeRequest, who: Member, clusters: Clusters) -> MergeOut:
    return MergeOut(**clusters.merge(who.user, body.cluster_ids, into=body.into).__dict__)


@router.post("/api/clusters/{cluster_id}/split", response_model=EditOut, status_code=201)
def split_cluster(cluster_id: RowIdPath, body: FaceIds, who: Member, clusters: Clusters) -> EditOut:
    """These faces of the cluster become a new cluster."""
    return EditOut(**clusters.split(who.user, cluster_id, body.face_ids).__dict__)


@router.post("/api/clusters/{cluster_id}/faces", response_model=EditOut)
def move_faces(cluster_id: RowIdPath, body: FaceIds, who: Member, clusters: Clusters) -> EditOut:
    """Move faces (from any cluster of the collection, or none) into this cluster."""
    return EditOut(**clusters.move(who.user, body.face_ids, cluster_id).__dict__)


@router.post("/api/clusters/{cluster_id}/unassign", response_model=EditOut)
def unassign_faces(cluster_id: RowIdPath, body: FaceIds, who: Member, clusters: Clusters) -> EditOut:
    """Take faces out of this cluster; automatic runs leave them out from then on."""
    return EditOut(**clusters.unassign(who.user, body.face_ids, cluster_id=cluster_id).__dict__)


@router.put("/api/clusters/{cluster_id}/name", response_model=ClusterDetailOut)
def name_cluster(cluster_id: RowIdPath, body: NameRequest, who: Member, clusters: Clusters) -> ClusterDetailOut:
    clusters.name(who.user, cluster_id, body.name)
    return detail(clusters, who, cluster_id)


@router.post("/api/clusters/{cluster_id}/subject", response_model=ToSubjectOut, status_code=201)
def cluster_to_subject(cluster_id: RowIdPath, body: ToSubjectRequest, who: Member, clusters: Clusters) -> ToSubjectOut:
    """The cluster becomes a subject of the gallery (created if missing), enrolled from its best faces."""
    subject, report = clusters.to_subject(who.user, cluster_id, body.gallery, label=body.label,
                                          attributes=body.attributes)
    return ToSubjectOut(cluster_id=cluster_id, subject_id=subject.id, gallery=subject.gallery, label=subject.label,
                        enrolled=[f.id for f in report.added], from_faces=report.from_faces,
                        suppressed=report.suppressed, failed=report.failed)


def _evidence(e: Evidence) -> EvidenceOut:
    def finite(v: float) -> float | None:
        return None if v != v else v  # NaN (no calibration) -> null

    return EvidenceOut(score=e.score, fmr=finite(e.fmr), look_alikes=finite(e.look_alikes), words=e.words)


@router.get("/api/collections/{name}/clusters/suggestions", response_model=SuggestionsOut)
async def cluster_suggestions(name: str, who: Member, clusters: Clusters, cpu: Cpu,
                              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> SuggestionsOut:
    """Clusters that may be one person, and unassigned faces that may belong to a cluster, strongest first,
    each with the calibrated evidence (cosine, false-match rate, expected look-alikes in the collection)."""
    found = await cpu.run(clusters.suggestions, who.user, name, limit=limit)
    ids = {m.cluster_a for m in found.merges} | {m.cluster_b for m in found.merges} | {
        a.cluster_id for a in found.attaches}
    samples = clusters.suggestion_samples(who.user, ids)
    # the faces these suggestions show may be looked at, under an audited cluster view
    shown = [f for faces in samples.values() for f in faces] + [a.face_id for a in found.attaches]
    token = clusters.shown(who.user, {"collection": name, "suggestions": True}, shown)
    return SuggestionsOut(
        collection=found.collection, faces=found.faces, threshold=found.threshold,
        threshold_fmr=found.threshold_fmr,
        merges=[MergeSuggestionOut(cluster_a=m.cluster_a, cluster_b=m.cluster_b, size_a=m.size_a, size_b=m.size_b,
                                   average=_evidence(m.average), best=_evidence(m.best),
                                   cross_neighbours=m.cross_neighbours,
                                   sample_thumbnails_a=[face_thumbnail_url(f, token) for f in samples[m.cluster_a]],
                                   sample_thumbnails_b=[face_thumbnail_url(f, token) for f in samples[m.cluster_b]])
                for m in found.merges],
        attaches=[AttachSuggestionOut(face_id=a.face_id, cluster_id=a.cluster_id, cluster_size=a.cluster_size,
                                      best=_evidence(a.best), support=a.support, other_clusters=a.other_clusters,
                                      thumbnail_url=face_thumbnail_url(a.face_id, token),
                                      sample_thumbnails=[face_thumbnail_url(f, token) for f in samples[a.cluster_id]])
                  for a in found.attaches])


@router.post("/api/clusters/suggestions/merge", response_model=AnswerOut)
def answer_merge_suggestion(body: MergeAnswer, who: Member, clusters: Clusters) -> AnswerOut:
    """Answer "these two clusters may be one person" (audited)."""
    result = clusters.answer_merge(who.user, body.cluster_a, body.cluster_b, body.accept)
    return AnswerOut(accepted=body.accept, cluster_id=result.cluster_id if result else None,
                     faces_moved=result.faces_moved if result else 0)


@router.post("/api/clusters/suggestions/attach", response_model=AnswerOut)
def answer_attach_suggestion(body: AttachAnswer, who: Member, clusters: Clusters) -> AnswerOut:
    """Answer "this unassigned face may belong to cluster N" (audited)."""
    result = clusters.answer_attach(who.user, body.face_id, body.cluster_id, body.accept)
    return AnswerOut(accepted=body.accept, cluster_id=result.cluster_id if result else None,
                     faces_moved=len(result.faces) if result else 0)

