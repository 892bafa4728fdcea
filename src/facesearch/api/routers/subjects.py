"""REST routes for galleries, subjects, enrolment, subject search, gallery matching and decisions.

Included by ``create_app``; the role is checked by the dependencies of :mod:`facesearch.api.deps`
(governance's one permission table) before the body is read (403 whatever is sent), searches
need a purpose and a case reference (422),
and everything goes through :class:`~facesearch.governance.subjects.SubjectGovernance`.

A subject that carries a collection's grant the user lacks answers as one that does not exist
(404). Showing a subject, an enrolment or search results is a look at faces: it is recorded
(``subject_view``, or the search's own record) and the image URLs carry the view grant it
issues (``?view=...``).
"""


from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from facesearch.api.deps import Actor, Cpu, Eraser, Subjects
from facesearch.api.deps import SubjectMember as Member
from facesearch.api.schemas import CandidateOut, RowId, RowIdPath, from_dataclass
from facesearch.api.urls import candidate_fields, face_photo_url, face_thumbnail_url, subject_face_thumbnail_url
from facesearch.catalog.subjects import DecisionInfo, GalleryInfo, SubjectFaceInfo, SubjectInfo
from facesearch.governance import PermissionDenied
from facesearch.governance.subject_import import import_people, people_from_uploads
from facesearch.governance.subjects import SubjectGovernance
from facesearch.search.subjects import DEFAULT_FUSION, FUSIONS
from facesearch.services.subjects import EnrolReport, SubjectRemoval

MAX_ENROL_FILES = 20
MAX_IMPORT_FILES = 500
MAX_PHOTO_BYTES = 25 * 1024 * 1024
FUSION_PATTERN = "^(" + "|".join(FUSIONS) + ")$"


# -- the boundary's models -------------------------------------------------------------------------------


class NewGallery(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[\w.\- ]+$")
    description: str = ""


GalleryOut = from_dataclass(GalleryInfo, "GalleryOut")



class NewSubject(BaseModel):
    gallery: str = Field(min_length=1)
    label: str = Field(min_length=1, max_length=200, description="a name or a number")
    attributes: dict[str, str] = Field(default_factory=dict, description="case id, date last seen, contact of "
                                       "the requesting family...: kept in the catalog, never in the audit log")


class AttributesUpdate(BaseModel):
    attributes: dict[str, str]


class SubjectFaceOut(BaseModel):
    id: int
    face_id: int | None
    source: str
    box: tuple[float, float, float, float]
    quality: float
    quality_issues: list[str]
    thumbnail_url: str | None
    created_at: str


class LinkOut(BaseModel):
    kind: str  # face | subject
    id: int
    decision_id: int
    score: float | None
    decided_by: str
    decided_at: str
    note: str
    label: str | None = None  # of a linked subject
    gallery: str | None = None
    collection: str | None = None  # of a linked face
    thumbnail_url: str | None = None
    photo_url: str | None = None


SubjectOut = from_dataclass(SubjectInfo, "SubjectOut", enrolled=(list[SubjectFaceOut], []),
                            links=(list[LinkOut], []))



class FaceIds(BaseModel):
    face_ids: list[RowId] = Field(min_length=1, max_length=200)


class EnrolOut(BaseModel):
    subject_id: int
    added: list[SubjectFaceOut]
    failed: list[tuple[str, str]]
    suppressed: int
    warnings: list[str]


RemovalOut = from_dataclass(SubjectRemoval, "RemovalOut")



class SubjectSearchRequest(BaseModel):
    purpose: str = Field(min_length=1)
    case_ref: str = Field(min_length=1)
    collections: list[str] | None = None
    top_k: int = Field(20, ge=1, le=200)
    fusion: str | None = Field(None, pattern=FUSION_PATTERN)
    include_weaker: bool = Field(False, description="also return candidates below the threshold (audited)")


class MatchRequest(BaseModel):
    gallery_a: str = Field(min_length=1)
    gallery_b: str = Field(min_length=1)
    purpose: str = Field(min_length=1)
    case_ref: str = Field(min_length=1)
    top: int = Field(50, ge=1, le=1000)
    fusion: str | None = Field(None, pattern=FUSION_PATTERN)


class DecisionRequest(BaseModel):
    decision: str = Field(pattern="^(confirm|reject)$")
    face_id: RowId | None = None
    other_subject_id: RowId | None = None
    score: float | None = None
    note: str = Field("", max_length=2000, description="why: recorded in the audit log")
    purpose: str = ""
    case_ref: str = ""


DecisionOut = from_dataclass(DecisionInfo, "DecisionOut")



class FaceCandidateOut(CandidateOut):
    """A face found for a subject: a search candidate plus the standing decision about it."""

    decision: str | None = None  # the standing decision about this face for the subject


class SubjectSearchOut(BaseModel):
    subject_id: int
    fusion: str
    verdict: str
    confident_match: bool
    review_notice: str = "Candidate leads only: every result needs human review; a score is not an identification."
    collections: list[str]
    faces_searched: int
    threshold: float
    threshold_rule: str
    candidates: list[FaceCandidateOut]
    warnings: list[str]
    include_weaker: bool = False
    weaker_withheld: int = 0  # candidates below the threshold left out (ask with include_weaker)
    view_token: str | None = None


class SubjectCandidateOut(BaseModel):
    rank: int
    subject_id: int
    label: str
    gallery: str
    similarity: float
    above_threshold: bool
    false_match_rate: float | None
    false_match_words: str | None
    faces: int
    best_face: int | None
    thumbnail_url: str | None


class IdentifyOut(BaseModel):
    verdict: str
    confident_match: bool
    probe: dict | None
    galleries: list[str]
    subjects_searched: int
    comparisons: int
    fusion: str
    threshold: float
    threshold_rule: str
    candidates: list[SubjectCandidateOut]
    warnings: list[str]


class PairOut(BaseModel):
    rank: int
    subject_a: int
    label_a: str
    subject_b: int
    label_b: str
    similarity: float
    above_threshold: bool
    false_match_rate: float | None
    false_match_words: str | None
    decision: str | None = None


class MatchOut(BaseModel):
    gallery_a: str
    gallery_b: str
    subjects_a: int
    subjects_b: int
    pairs_compared: int
    comparisons: int
    fusion: str
    threshold: float
    threshold_rule: str
    pairs: list[PairOut]
    warnings: list[str]


# -- conversions --------------------------------------------------------------------------------------------


def _gallery_out(g: GalleryInfo) -> GalleryOut:
    return GalleryOut(**g.__dict__)


def _face_out(f: SubjectFaceInfo, token: str) -> SubjectFaceOut:
    has_thumb = bool(f.thumbnail) or f.face_id is not None
    return SubjectFaceOut(id=f.id, face_id=f.face_id, source=f.source, box=f.box, quality=f.quality,
                          quality_issues=list(f.quality_issues), created_at=f.created_at,
                          thumbnail_url=subject_face_thumbnail_url(f.id, token) if has_thumb else None)


def _decision_out(d: DecisionInfo) -> DecisionOut:
    return DecisionOut(**d.__dict__)


def _estimate(c: Any) -> dict:
    fm = c.false_match
    return {"false_match_rate": fm.rate if fm else None, "false_match_words": fm.words if fm else None}


# -- the routes ---------------------------------------------------------------------------------------------

router = APIRouter(tags=["subjects"])


def subject_out(subjects: SubjectGovernance, info: SubjectInfo, who: Actor) -> SubjectOut:
    """The subject with its enrolled faces and confirmed matches: a look at faces, recorded first."""
    out = SubjectOut(**info.__dict__)
    enrolled = subjects.subjects.faces(info.id)
    links, shown = links_of(subjects, info.id, who)
    token = subjects.shown(who.user, info.id, face_ids=shown, subject_face_ids=[f.id for f in enrolled])
    out.enrolled = [_face_out(f, token) for f in enrolled]
    for link in links:
        if link.kind == "face" and link.id in shown:
            link.thumbnail_url = face_thumbnail_url(link.id, token) if link.thumbnail_url else None
            link.photo_url = face_photo_url(link.id, token)
    out.links = links
    return out


def links_of(subjects: SubjectGovernance, subject_id: int, who: Actor) -> tuple[list[LinkOut], list[int]]:
    """The subject's confirmed links, and the collection faces among them the user may be shown."""
    links, shown = [], []
    hidden = subjects.hidden_subjects(who.user)
    for (kind, target), d in sorted(subjects.subjects.links(subject_id).items()):
        link = LinkOut(kind=kind, id=target, decision_id=d.id, score=d.score, decided_by=d.decided_by,
                       decided_at=d.decided_at, note=d.note)
        if kind == "subject":
            other = subjects.subjects.store.subjects(ids=[target]) if target not in hidden else []
            if other:  # a subject the user may not see is listed by id only
                link.label, link.gallery = other[0].label, other[0].gallery
        else:
            try:
                face = subjects.gov.face(who.user, target)
            except PermissionDenied:  # not granted to this user, or opted out: listed by id only
                face = None
            if face is not None:
                link.collection = face.collection
                link.thumbnail_url = face_thumbnail_url(target) if face.thumbnail else None
                shown.append(target)
        links.append(link)
    return links, shown


# -- galleries ---------------------------------------------------------------------------------


@router.get("/api/galleries", response_model=list[GalleryOut])
def list_galleries(who: Member, subjects: Subjects) -> list[GalleryOut]:
    return [_gallery_out(g) for g in subjects.galleries(who.user)]


@router.post("/api/galleries", response_model=GalleryOut, status_code=201)
def create_gallery(body: NewGallery, who: Member, subjects: Subjects) -> GalleryOut:
    return _gallery_out(subjects.create_gallery(who.user, body.name, body.description))


@router.delete("/api/galleries/{name}", response_model=RemovalOut)
def remove_gallery(name: str, who: Eraser, subjects: Subjects, reason: str = "") -> RemovalOut:
    return RemovalOut(**subjects.remove_gallery(who.user, name, reason).__dict__)


@router.post("/api/galleries/match", response_model=MatchOut)
def match_galleries(body: MatchRequest, who: Member, subjects: Subjects) -> MatchOut:
    result = subjects.match(who.user, body.gallery_a, body.gallery_b, purpose=body.purpose,
                            case_ref=body.case_ref, top=body.top, fusion=body.fusion)
    pairs = []
    for p in result.pairs:
        current = subjects.subjects.store.current(p.subject_a).get(("subject", p.subject_b))
        pairs.append(PairOut(rank=p.rank, subject_a=p.subject_a, label_a=p.label_a, subject_b=p.subject_b,
                             label_b=p.label_b, similarity=p.similarity, above_threshold=p.above_threshold,
                             decision=current.decision if current else None, **_estimate(p)))
    data = result.to_dict()
    data["pairs"] = pairs
    return MatchOut(**data)


# -- subjects ----------------------------------------------------------------------------------


@router.get("/api/subjects", response_model=list[SubjectOut])
def list_subjects(who: Member, subjects: Subjects, gallery: Annotated[str | None, Query()] = None) -> list[SubjectOut]:
    return [SubjectOut(**s.__dict__) for s in subjects.list_subjects(who.user, gallery)]


@router.post("/api/subjects", response_model=SubjectOut, status_code=201)
def add_subject(body: NewSubject, who: Member, subjects: Subjects) -> SubjectOut:
    return subject_out(subjects, subjects.add_subject(who.user, body.gallery, body.label, body.attributes), who)


@router.get("/api/subjects/{subject_id}", response_model=SubjectOut)
def get_subject(subject_id: RowIdPath, who: Member, subjects: Subjects) -> SubjectOut:
    return subject_out(subjects, subjects.subject(who.user, subject_id), who)


@router.put("/api/subjects/{subject_id}/attributes", response_model=SubjectOut)
def update_attributes(subject_id: RowIdPath, body: AttributesUpdate, who: Member, subjects: Subjects) -> SubjectOut:
    return subject_out(subjects, subjects.update_attributes(who.user, subject_id, body.attributes), who)


@router.delete("/api/subjects/{subject_id}", response_model=RemovalOut)
def remove_subject(subject_id: RowIdPath, who: Member, subjects: Subjects, reason: str = "") -> RemovalOut:
    return RemovalOut(**subjects.remove(who.user, subject_id, reason).__dict__)


def enrol_out(subjects: SubjectGovernance, report: EnrolReport, who: Actor) -> EnrolOut:
    token = subjects.shown(who.user, report.subject_id, subject_face_ids=[f.id for f in report.added])
    return EnrolOut(subject_id=report.subject_id, added=[_face_out(f, token) for f in report.added],
                    failed=report.failed, suppressed=report.suppressed, warnings=report.warnings)


@router.post("/api/subjects/{subject_id}/faces", response_model=EnrolOut)
async def enrol_photos(subject_id: RowIdPath, who: Member, subjects: Subjects, cpu: Cpu,
                       files: Annotated[list[UploadFile], File()],
                       face: Annotated[int | None, Form()] = None) -> EnrolOut:
    if len(files) > MAX_ENROL_FILES:
        raise HTTPException(413, f"at most {MAX_ENROL_FILES} photos per enrolment")
    photos = []
    for upload in files:
        data = await upload.read(MAX_PHOTO_BYTES + 1)
        if len(data) > MAX_PHOTO_BYTES:
            raise HTTPException(413, f"{upload.filename}: larger than {MAX_PHOTO_BYTES // 2**20} MB")
        photos.append((upload.filename or "photo", data))
    return enrol_out(subjects, await cpu.run(subjects.enroll, who.user, subject_id, photos, face_index=face), who)


@router.post("/api/galleries/{name}/import")
async def import_registry(name: str, who: Member, subjects: Subjects, cpu: Cpu,
                          files: Annotated[list[UploadFile], File()],
                          paths: Annotated[list[str] | None, Form()] = None) -> dict:
    """A folder per person (a browser's folder upload: ``paths`` are the files' relative paths,
    else their names), with an optional manifest: the same governed, audited import as
    ``facesearch subject import`` (docs/api.md gives the answer's shape)."""
    if len(files) > MAX_IMPORT_FILES:
        raise HTTPException(413, f"at most {MAX_IMPORT_FILES} files per import: import the registry in parts")
    names = paths if paths and len(paths) == len(files) else [f.filename or "photo" for f in files]
    uploaded = []
    for upload, path in zip(files, names):
        data = await upload.read(MAX_PHOTO_BYTES + 1)
        if len(data) > MAX_PHOTO_BYTES:
            raise HTTPException(413, f"{path}: larger than {MAX_PHOTO_BYTES // 2**20} MB")
        uploaded.append((path, data))
    people, ignored = people_from_uploads(uploaded)
    report = await cpu.run(import_people, subjects, who.user, name, people, ignored)
    return report.to_dict()


@router.post("/api/subjects/{subject_id}/faces/from-index", response_model=EnrolOut)
def enrol_faces(subject_id: RowIdPath, body: FaceIds, who: Member, subjects: Subjects) -> EnrolOut:
    return enrol_out(subjects, subjects.enroll_faces(who.user, subject_id, body.face_ids), who)


@router.delete("/api/subject-faces/{subject_face_id}", response_model=RemovalOut)
def remove_subject_face(subject_face_id: RowIdPath, who: Member, subjects: Subjects, reason: str = "") -> RemovalOut:
    return RemovalOut(**subjects.remove_face(who.user, subject_face_id, reason).__dict__)


@router.get("/api/subject-faces/{subject_face_id}/thumbnail", response_class=FileResponse)
def subject_face_thumbnail(subject_face_id: RowIdPath, who: Member, subjects: Subjects,
                           view: Annotated[str | None, Query(max_length=100)] = None) -> FileResponse:
    path = subjects.thumbnail(who.user, subject_face_id, view)
    if not path.is_file():
        raise HTTPException(404, "thumbnail missing")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


# -- searching -----------------------------------------------------------------------------------


@router.post("/api/subjects/{subject_id}/search", response_model=SubjectSearchOut)
def search_subject(subject_id: RowIdPath, body: SubjectSearchRequest, who: Member,
                   subjects: Subjects) -> SubjectSearchOut:
    result = subjects.search(who.user, subject_id, purpose=body.purpose, case_ref=body.case_ref,
                             collections=body.collections or None, top_k=body.top_k, fusion=body.fusion,
                             include_weaker=body.include_weaker)
    token = subjects.gov.grant_for(who.user, result.audit_id, purpose=body.purpose, case_ref=body.case_ref,
                                   face_ids=[c.face_id for c in result.candidates]) if result.audit_id else ""
    current = subjects.subjects.store.current(subject_id)
    candidates = []
    for c in result.candidates:
        decided = current.get(("face", c.face_id))
        candidates.append(FaceCandidateOut(**candidate_fields(c, token),
                                           decision=decided.decision if decided else None))
    data = result.to_dict()
    return SubjectSearchOut(subject_id=subject_id, fusion=body.fusion or DEFAULT_FUSION,
                            verdict=data["verdict"], confident_match=data["confident_match"],
                            collections=result.collections, faces_searched=result.faces_searched,
                            threshold=result.threshold, threshold_rule=result.threshold_rule,
                            candidates=candidates, warnings=result.warnings, include_weaker=body.include_weaker,
                            weaker_withheld=result.weaker_withheld, view_token=token or None)


@router.post("/api/subjects/identify", response_model=IdentifyOut)
async def identify(who: Member, subjects: Subjects, cpu: Cpu, probe: Annotated[UploadFile, File()],
                   purpose: Annotated[str, Form(min_length=1)], case_ref: Annotated[str, Form(min_length=1)],
                   galleries: Annotated[list[str] | None, Form()] = None,
                   top_k: Annotated[int, Form(ge=1, le=200)] = 10,
                   fusion: Annotated[str | None, Form(pattern=FUSION_PATTERN)] = None,
                   face: Annotated[int | None, Form()] = None) -> IdentifyOut:
    data = await probe.read(MAX_PHOTO_BYTES + 1)
    if len(data) > MAX_PHOTO_BYTES:
        raise HTTPException(413, f"probe larger than {MAX_PHOTO_BYTES // 2**20} MB")
    result = await cpu.run(subjects.identify, who.user, data, purpose=purpose, case_ref=case_ref,
                           galleries=galleries or None, top_k=top_k, fusion=fusion, face_index=face,
                           probe_name=probe.filename or "probe")
    best = [c.best_face for c in result.candidates if c.best_face]
    token = subjects.gov.grant_for(who.user, result.audit_id, purpose=purpose, case_ref=case_ref,
                                   subject_face_ids=best) if result.audit_id else ""
    out = result.to_dict()
    out["probe"] = {k: v for k, v in out["probe"].items() if k != "source"} if out["probe"] else None
    out["candidates"] = [SubjectCandidateOut(
        rank=c.rank, subject_id=c.subject_id, label=c.label, gallery=c.gallery, similarity=c.similarity,
        above_threshold=c.above_threshold, faces=c.faces, best_face=c.best_face,
        thumbnail_url=subject_face_thumbnail_url(c.best_face, token) if c.best_face else None,
        **_estimate(c))
        for c in result.candidates]
    return IdentifyOut(**out)


# -- decisions -----------------------------------------------------------------------------------


@router.post("/api/subjects/{subject_id}/decisions", response_model=DecisionOut, status_code=201)
def decide(subject_id: RowIdPath, body: DecisionRequest, who: Member, subjects: Subjects) -> DecisionOut:
    return _decision_out(subjects.decide(who.user, subject_id, body.decision, face_id=body.face_id,
                                         other_subject_id=body.other_subject_id, score=body.score,
                                         note=body.note, purpose=body.purpose, case_ref=body.case_ref))


@router.get("/api/subjects/{subject_id}/decisions", response_model=list[DecisionOut])
def list_decisions(subject_id: RowIdPath, who: Member, subjects: Subjects) -> list[DecisionOut]:
    return [_decision_out(d) for d in subjects.decisions(who.user, subject_id)]


