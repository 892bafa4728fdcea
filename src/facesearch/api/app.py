"""The facesearch server: a FastAPI app over the governed engine, plus the web app.

Every route needs a user (session cookie + CSRF header, or an API key) except ``/health``
and login. Roles are checked by dependencies, before the request body is looked at, so a
caller without the right role gets 403 whatever it sends; a search without purpose or
case reference gets 422.
"""


import asyncio
import hashlib
import json
import secrets
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from facesearch.api import schemas
from facesearch.api.jobs import JobRunner
from facesearch.catalog import CatalogError
from facesearch.engine import Engine
from facesearch.errors import FacesearchError, ImageError, NoFaceError
from facesearch.governance import AccountError, Governance, MissingJustification, PermissionDenied, UserInfo
from facesearch.governance.accounts import LoginThrottle
from facesearch.home import HomeBusyError
from facesearch.pipeline import load_image

SESSION_COOKIE = "fs_session"
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
MAX_UPLOAD_FILES = 200
MAX_PROBE_BYTES = 25 * 1024 * 1024


@dataclass(frozen=True)
class Actor:
    user: UserInfo
    via: str  # "session" | "api_key"
    csrf: str | None = None


def frame_box(info, frame_path: Path) -> tuple[float, float, float, float]:
    """A video face's box in the pixels of its stored (downscaled) frame."""
    from PIL import Image

    try:
        with Image.open(frame_path) as frame:
            scale = frame.width / max(info.image_size[0], 1)
    except OSError:
        scale = 1.0
    return tuple(round(v * scale, 1) for v in info.box)


RETENTION_ACTOR = UserInfo(0, "system:retention", "admin")


async def _retention_sweeps(gov: Governance, every_s: float) -> None:
    """Erase what is past its retention period at start-up and then every ``every_s`` seconds."""
    while True:
        try:
            await asyncio.to_thread(gov.enforce_retention, RETENTION_ACTOR, apply=True)
        except HomeBusyError:
            pass  # an ingest holds the home: the next sweep will do it
        await asyncio.sleep(every_s)


def create_app(engine: Engine, *, secure_cookies: bool = False, login_throttle: LoginThrottle | None = None,
               retention_every_s: float | None = None) -> FastAPI:
    gov = Governance(engine)
    throttle = login_throttle or LoginThrottle()
    jobs = JobRunner()
    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        sweeper = asyncio.create_task(_retention_sweeps(gov, retention_every_s)) if retention_every_s else None
        yield
        if sweeper:
            sweeper.cancel()
        jobs.shutdown()  # let a running ingest finish its current image and save the index

    app = FastAPI(title="facesearch", version="0.1.0", lifespan=lifespan,
                  description="Self-hosted, accountable face search. Every search needs a purpose and a case "
                              "reference and is written to a hash-chained audit log.")
    app.state.governance = gov
    app.state.jobs = jobs
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")

    # -- errors -> HTTP --------------------------------------------------------------------------
    status_of = [(PermissionDenied, 403), (MissingJustification, 422), (NoFaceError, 422), (ImageError, 400),
                 (AccountError, 400), (HomeBusyError, 409), (CatalogError, 404), (FacesearchError, 400)]

    @app.exception_handler(FacesearchError)
    async def facesearch_error(_request: Request, exc: FacesearchError) -> JSONResponse:
        code = next(code for kind, code in status_of if isinstance(exc, kind))
        return JSONResponse({"detail": str(exc)}, status_code=code)

    # -- authentication ----------------------------------------------------------------------------

    def actor(request: Request) -> Actor:
        auth = request.headers.get("authorization", "")
        key = request.headers.get("x-api-key") or (auth[7:] if auth.lower().startswith("bearer ") else "")
        if key:
            user = gov.accounts.user_for_api_key(key)
            if user is None:
                raise HTTPException(401, "invalid or revoked API key")
            return Actor(user, "api_key")
        token = request.cookies.get(SESSION_COOKIE)
        found = gov.accounts.session_user(token) if token else None
        if found is None:
            raise HTTPException(401, "log in first (session cookie or API key required)")
        user, csrf = found
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            sent = request.headers.get("x-csrf-token", "")
            if not secrets.compare_digest(sent.encode(), csrf.encode()):
                raise HTTPException(403, "missing or wrong CSRF token (X-CSRF-Token header)")
        return Actor(user, "session", csrf)

    def role(*roles: str) -> Callable[..., Actor]:
        def check(who: Annotated[Actor, Depends(actor)]) -> Actor:
            if who.user.role not in roles:
                raise HTTPException(403, f"{who.user.username} ({who.user.role}) may not do this; "
                                         f"needs {' or '.join(roles)}")
            return who
        return check

    Anyone = Annotated[Actor, Depends(actor)]
    Admin = Annotated[Actor, Depends(role("admin"))]
    Searcher = Annotated[Actor, Depends(role("admin", "investigator"))]
    Auditor = Annotated[Actor, Depends(role("auditor"))]

    # -- public ------------------------------------------------------------------------------------

    @app.get("/health", tags=["public"])
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/api/login", response_model=schemas.LoginResponse, tags=["auth"],
              responses={429: {"description": "too many failed attempts: wait Retry-After seconds"}})
    def login(body: schemas.LoginRequest, request: Request, response: Response) -> schemas.LoginResponse:
        client = request.client.host if request.client else "unknown"
        wait = throttle.wait_s(body.username, client)
        if wait > 0:
            gov.audit.append(body.username, "login_throttled", {"client": client, "retry_after_s": round(wait)})
            raise HTTPException(429, "too many failed login attempts: try again later",
                                headers={"Retry-After": str(int(wait) + 1)})
        user = gov.accounts.check_password(body.username, body.password)
        gov.audit.append(body.username, "login", {"ok": user is not None})
        if user is None:
            throttle.failed(body.username, client)
            raise HTTPException(401, "wrong username or password")
        throttle.succeeded(body.username)
        token, csrf = gov.accounts.create_session(user)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies,
                            max_age=12 * 3600, path="/")
        return schemas.LoginResponse(username=user.username, role=user.role, csrf_token=csrf)

    @app.post("/api/logout", tags=["auth"])
    def logout(who: Anyone, request: Request, response: Response) -> dict:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            gov.accounts.end_session(token)
        response.delete_cookie(SESSION_COOKIE, path="/")
        gov.audit.append(who.user.username, "logout")
        return {"ok": True}

    @app.get("/api/me", response_model=schemas.Me, tags=["auth"])
    def me(who: Anyone) -> schemas.Me:
        return schemas.Me(username=who.user.username, role=who.user.role,
                          collections=gov.accounts.granted_collections(who.user), csrf_token=who.csrf)

    # -- users (admin) -----------------------------------------------------------------------------

    @app.get("/api/users", response_model=list[schemas.UserOut], tags=["users"])
    def list_users(who: Admin) -> list[schemas.UserOut]:
        return [schemas.UserOut(**u.__dict__) for u in gov.accounts.users()]

    @app.post("/api/users", response_model=schemas.UserOut, status_code=201, tags=["users"])
    def add_user(body: schemas.NewUser, who: Admin) -> schemas.UserOut:
        user = gov.accounts.add_user(body.username, body.password, body.role)
        gov.audit.append(who.user.username, "user_add", {"username": user.username, "role": user.role})
        return schemas.UserOut(**user.__dict__)

    @app.post("/api/users/{username}/deactivate", response_model=schemas.UserOut, tags=["users"])
    def deactivate_user(username: str, who: Admin) -> schemas.UserOut:
        user = gov.accounts.set_active(username, False)
        gov.audit.append(who.user.username, "user_deactivate", {"username": username})
        return schemas.UserOut(**user.__dict__)

    @app.post("/api/users/{username}/api-keys", response_model=schemas.ApiKeyOut, status_code=201, tags=["users"])
    def new_api_key(username: str, who: Admin) -> schemas.ApiKeyOut:
        secret = gov.accounts.create_api_key(username, label=f"issued by {who.user.username}")
        gov.audit.append(who.user.username, "api_key_issue", {"username": username})
        return schemas.ApiKeyOut(api_key=secret)

    # -- collections -------------------------------------------------------------------------------

    @app.get("/api/collections", response_model=list[schemas.CollectionOut], tags=["collections"])
    def list_collections(who: Searcher) -> list[schemas.CollectionOut]:
        allowed = set(gov.accounts.granted_collections(who.user))
        return [schemas.CollectionOut(**c.__dict__) for c in engine.collections() if c.name in allowed]

    @app.post("/api/collections", response_model=schemas.CollectionOut, status_code=201, tags=["collections"])
    def create_collection(body: schemas.NewCollection, who: Admin) -> schemas.CollectionOut:
        info = engine.create_collection(body.name, body.legal_basis, body.retention_days, body.keep_thumbnails)
        gov.audit.append(who.user.username, "collection_create", {"collection": body.name,
                                                                  "legal_basis": body.legal_basis})
        return schemas.CollectionOut(**info.__dict__)

    @app.post("/api/collections/{name}/grants", tags=["collections"])
    def grant(name: str, body: schemas.GrantRequest, who: Admin) -> dict:
        info = engine.collection(name)
        gov.accounts.grant(body.username, info.id)
        gov.audit.append(who.user.username, "grant", {"collection": name, "username": body.username})
        return {"ok": True}

    @app.delete("/api/collections/{name}/grants/{username}", tags=["collections"])
    def revoke(name: str, username: str, who: Admin) -> dict:
        gov.accounts.revoke(username, engine.collection(name).id)
        gov.audit.append(who.user.username, "revoke", {"collection": name, "username": username})
        return {"ok": True}

    def start_ingest(who: Actor, name: str, paths: list[Path], kind: str) -> schemas.JobOut:
        engine.collection(name)  # 404 before queuing

        def work(job) -> None:
            def progress(done, total, summary) -> None:
                job.done, job.total = done, total
                job.images_indexed, job.faces_indexed = summary.images_indexed, summary.faces_indexed

            summary = gov.ingest(who.user, paths, name, create=False, progress=False, on_progress=progress)
            job.failed = [list(x) for x in summary.failed]
            job.skipped = [list(x) for x in summary.skipped]
            if kind == "upload":  # our copies of files that could not be indexed are not kept
                for source, _reason in summary.failed + summary.skipped:
                    Path(source).unlink(missing_ok=True)

        return schemas.JobOut(**jobs.submit(name, kind, work).to_dict())

    @app.post("/api/collections/{name}/photos", response_model=schemas.JobOut, status_code=202,
              tags=["collections"])
    async def upload_photos(name: str, who: Admin, files: Annotated[list[UploadFile], File()]) -> schemas.JobOut:
        if len(files) > MAX_UPLOAD_FILES:
            raise HTTPException(413, f"at most {MAX_UPLOAD_FILES} files per upload")
        info = engine.collection(name)
        target = engine.uploads / f"c{info.id}"
        target.mkdir(parents=True, exist_ok=True)
        saved = []
        for upload in files:
            data = await upload.read(MAX_UPLOAD_BYTES + 1)
            if len(data) > MAX_UPLOAD_BYTES:
                raise HTTPException(413, f"{upload.filename}: larger than {MAX_UPLOAD_BYTES // 2**20} MB")
            suffix = Path(upload.filename or "").suffix.lower()[:8]
            path = target / f"{hashlib.sha256(data).hexdigest()}{suffix}"
            path.write_bytes(data)
            saved.append(path)
        return start_ingest(who, name, saved, "upload")

    @app.post("/api/collections/{name}/ingest-folder", response_model=schemas.JobOut, status_code=202,
              tags=["collections"])
    def ingest_folder(name: str, body: schemas.FolderIngest, who: Admin) -> schemas.JobOut:
        folder = Path(body.path)
        if not folder.is_dir():
            raise HTTPException(400, f"{folder}: not a folder on the server")
        return start_ingest(who, name, [folder], "folder")

    @app.get("/api/jobs/{job_id}", response_model=schemas.JobOut, tags=["collections"])
    def job_status(job_id: str, who: Admin) -> schemas.JobOut:
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return schemas.JobOut(**job.to_dict())

    @app.get("/api/jobs", response_model=list[schemas.JobOut], tags=["collections"])
    def list_jobs(who: Admin) -> list[schemas.JobOut]:
        return [schemas.JobOut(**j.to_dict()) for j in jobs.all()]

    # -- search and verify -------------------------------------------------------------------------

    async def read_probe(upload: UploadFile) -> bytes:
        data = await upload.read(MAX_PROBE_BYTES + 1)
        if len(data) > MAX_PROBE_BYTES:
            raise HTTPException(413, f"probe larger than {MAX_PROBE_BYTES // 2**20} MB")
        return data

    @app.post("/api/search", response_model=schemas.SearchOut, tags=["search"])
    async def search(who: Searcher, probe: Annotated[UploadFile, File()], purpose: Annotated[str, Form(min_length=1)],
                     case_ref: Annotated[str, Form(min_length=1)],
                     collections: Annotated[list[str] | None, Form()] = None,
                     top_k: Annotated[int, Form(ge=1, le=200)] = 20,
                     face: Annotated[int | None, Form()] = None) -> schemas.SearchOut:
        data = await read_probe(probe)
        result = gov.search(who.user, data, purpose=purpose, case_ref=case_ref, collections=collections or None,
                            top_k=top_k, face_index=face, probe_name=probe.filename or "probe")
        return search_out(result)

    def search_out(result) -> schemas.SearchOut:
        probe_faces = list(result.probe.face_boxes) if result.probe is not None else []
        data = result.to_dict()
        probe = None
        if result.probe is not None:
            p = result.probe
            probe = schemas.ProbeOut(faces_in_image=p.faces_in_image, chosen=p.chosen, rule=p.rule, box=p.box,
                                     quality=p.quality, quality_issues=list(p.quality_issues), usable=p.usable)
        return schemas.SearchOut(
            verdict=data["verdict"], confident_match=data["confident_match"], probe=probe, probe_faces=probe_faces,
            collections=result.collections, faces_searched=result.faces_searched, threshold=result.threshold,
            threshold_rule=result.threshold_rule, warnings=result.warnings,
            candidates=[schemas.CandidateOut(
                rank=c.rank, face_id=c.face_id, similarity=c.similarity, above_threshold=c.above_threshold,
                false_match_rate=c.false_match.rate if c.false_match else None,
                false_match_extrapolated=c.false_match.extrapolated if c.false_match else False,
                false_match_fpir=c.false_match.fpir if c.false_match else None,
                false_match_words=c.false_match.words if c.false_match else None, collection=c.collection,
                image_id=c.image_id, box=c.box, quality=c.quality,
                thumbnail_url=f"/api/faces/{c.face_id}/thumbnail" if c.thumbnail else None,
                photo_url=f"/api/faces/{c.face_id}/photo", media=c.media, timestamp_s=c.timestamp_s,
                track_id=c.track_id, track_span=c.track_span) for c in result.candidates])

    @app.post("/api/verify", response_model=schemas.VerifyOut, tags=["search"])
    async def verify(who: Searcher, a: Annotated[UploadFile, File()], b: Annotated[UploadFile, File()],
                     purpose: Annotated[str, Form(min_length=1)], case_ref: Annotated[str, Form(min_length=1)],
                     face_a: Annotated[int | None, Form()] = None,
                     face_b: Annotated[int | None, Form()] = None) -> schemas.VerifyOut:
        result = gov.verify(who.user, await read_probe(a), await read_probe(b), purpose=purpose, case_ref=case_ref,
                            face_a=face_a, face_b=face_b, names=(a.filename or "a", b.filename or "b"))
        data = result.to_dict()
        return schemas.VerifyOut(**{k: data[k] for k in schemas.VerifyOut.model_fields if k != "faces"},
                                 faces=[dict(f) for f in data["faces"]])

    # -- faces and photos --------------------------------------------------------------------------

    @app.get("/api/faces/{face_id}", response_model=schemas.FaceOut, tags=["faces"])
    def face(face_id: schemas.RowIdPath, who: Searcher) -> schemas.FaceOut:
        info = gov.face(who.user, face_id)
        if info.is_video:  # its photo is the stored frame: one face, boxed in the frame's own pixels
            box = frame_box(info, gov.photo_path(info))
            others = [{"face_id": info.id, "box": box, "quality": info.quality}]
        else:
            box = info.box
            others = [{"face_id": f.id, "box": f.box, "quality": f.quality}
                      for f in engine.catalog.image_faces(info.image_id)]
        return schemas.FaceOut(face_id=info.id, image_id=info.image_id, collection=info.collection, box=box,
                               quality=info.quality, quality_issues=list(info.quality_issues),
                               thumbnail_url=f"/api/faces/{face_id}/thumbnail" if info.thumbnail else None,
                               photo_url=f"/api/faces/{face_id}/photo", image_faces=others, media=info.media,
                               timestamp_s=info.timestamp_s, track_id=info.track_id, track_span=info.track_span)

    @app.get("/api/faces/{face_id}/thumbnail", tags=["faces"], response_class=FileResponse)
    def thumbnail(face_id: schemas.RowIdPath, who: Searcher) -> FileResponse:
        path = gov.thumbnail(who.user, face_id)
        if not path.is_file():
            raise HTTPException(404, "thumbnail missing (run facesearch doctor)")
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})

    @app.get("/api/faces/{face_id}/photo", tags=["faces"])
    def photo(face_id: schemas.RowIdPath, who: Searcher, purpose: str = "", case_ref: str = "") -> Response:
        access = gov.photo(who.user, face_id, purpose=purpose, case_ref=case_ref)
        if not access.path.is_file():
            raise HTTPException(404, "the source photo is no longer at its recorded path")
        if access.is_video_frame:
            return FileResponse(access.path, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})
        # Re-encode upright: browsers differ on EXIF orientation, the boxes are for the upright image.
        from io import BytesIO

        from PIL import Image

        buffer = BytesIO()
        Image.fromarray(load_image(access.path)).save(buffer, format="JPEG", quality=90)
        return Response(buffer.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})

    # -- erasure and opt-out (admin) ---------------------------------------------------------------

    @app.post("/api/erase", response_model=schemas.EraseOut, tags=["erasure"])
    def erase(body: schemas.EraseRequest, who: Admin) -> schemas.EraseOut:
        report = gov.erase(who.user, faces=body.faces, images=body.images, collection=body.collection,
                           reason=body.reason)
        return schemas.EraseOut(**report.__dict__)

    @app.post("/api/erase/like", response_model=schemas.EraseOut, tags=["erasure"])
    async def erase_like(who: Admin, probe: Annotated[UploadFile, File()],
                         min_score: Annotated[float, Form(gt=0.0, le=1.0)],
                         reason: Annotated[str, Form()] = "") -> schemas.EraseOut:
        report = gov.erase(who.user, like=await read_probe(probe), min_score=min_score, reason=reason)
        return schemas.EraseOut(**report.__dict__)

    @app.post("/api/retention", response_model=schemas.RetentionOut, tags=["erasure"])
    def retention(body: schemas.RetentionRequest, who: Admin) -> schemas.RetentionOut:
        """What is kept past its collection's retention period; ``apply`` erases it (audited).
        The server also does this at start and every few hours (``facesearch serve --retention-hours``)."""
        return schemas.RetentionOut(**gov.enforce_retention(who.user, apply=body.apply).__dict__)

    @app.post("/api/optouts", status_code=201, tags=["erasure"])
    async def opt_out(who: Admin, probe: Annotated[UploadFile, File()],
                      reference: Annotated[str, Form(min_length=1)]) -> dict:
        optout_id = gov.opt_out(who.user, await read_probe(probe), reference)
        return {"id": optout_id, "threshold": gov.optouts.threshold}

    @app.get("/api/optouts", tags=["erasure"])
    def list_optouts(who: Admin) -> list[dict]:
        return gov.optouts.entries()

    # -- audit (auditor) ---------------------------------------------------------------------------

    def audit_filters(actor_name: str | None, action: str | None, case_ref: str | None, since: str | None,
                      until: str | None) -> dict:
        return {"actor": actor_name, "action": action, "case_ref": case_ref, "since": since, "until": until}

    @app.get("/api/audit", response_model=list[schemas.AuditOut], tags=["audit"])
    def audit_log(who: Auditor, actor_name: Annotated[str | None, Query(alias="actor")] = None,
                  action: str | None = None, case_ref: str | None = None, since: str | None = None,
                  until: str | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 500) -> list:
        entries = gov.audit.entries(**audit_filters(actor_name, action, case_ref, since, until), limit=limit,
                                    newest_first=True)
        gov.audit.append(who.user.username, "audit_read", {"returned": len(entries)})
        return [schemas.AuditOut(**e.to_dict()) for e in entries]

    @app.get("/api/audit/export", tags=["audit"])
    def audit_export(who: Auditor, actor_name: Annotated[str | None, Query(alias="actor")] = None,
                     action: str | None = None, case_ref: str | None = None, since: str | None = None,
                     until: str | None = None) -> StreamingResponse:
        entries = gov.audit.entries(**audit_filters(actor_name, action, case_ref, since, until))
        gov.audit.append(who.user.username, "audit_export", {"returned": len(entries)})
        lines = (json.dumps(e.to_dict(), sort_keys=True) + "\n" for e in entries)
        return StreamingResponse(lines, media_type="application/x-ndjson",
                                 headers={"Content-Disposition": "attachment; filename=facesearch-audit.jsonl"})

    @app.get("/api/audit/verify", response_model=schemas.AuditCheckOut, tags=["audit"])
    def audit_verify(who: Auditor) -> schemas.AuditCheckOut:
        check = gov.audit.verify()
        return schemas.AuditCheckOut(ok=check.ok, records=check.records, problems=check.problems)

    from facesearch.api.subjects import add_subject_routes  # galleries, subjects, matching, decisions
    from facesearch.api.web import add_web_routes

    add_subject_routes(app, gov, role)
    from facesearch.api.clusters import add_cluster_routes  # clusters of unknown faces

    add_cluster_routes(app, gov, role)
    add_web_routes(app, gov)

    return app
