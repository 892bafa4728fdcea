"""The facesearch server: a FastAPI app over the governed engine, plus the web app.

Every route needs a user (session cookie + CSRF header, or an API key) except ``/health``
and login. Roles are checked by dependencies, before the request body is looked at, so a
caller without the right role gets 403 whatever it sends; a search without purpose or
case reference gets 422. ``/ready`` is public too; ``/metrics`` answers loopback and the
networks in FACESEARCH_METRICS_ALLOW only.

Faces are looked at only under a view grant (see :mod:`facesearch.governance.views`): the
search, subject or cluster view that shows faces issues one, and the URLs it returns carry it
(``?view=...``); ``POST /api/views`` issues one for faces named by id with a purpose and a case.
Security headers, the cross-site guard and the offline ``/docs`` are in :mod:`facesearch.api.security`.
CPU work (decode, detect, embed, clustering) runs on a bounded pool (:mod:`facesearch.api.workers`);
request bodies are limited in size and pace (:mod:`facesearch.api.limits`).
"""


import asyncio
import json
import secrets
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from facesearch import readiness
from facesearch.api import schemas
from facesearch.api.jobs import JobRunner
from facesearch.api.limits import RequestLimits, ServerLimits
from facesearch.api.observability import ObservabilityMiddleware, metrics_peer_allowed
from facesearch.api.photo_facts import capture_time, source_name
from facesearch.api.proxies import TrustedProxies, request_client
from facesearch.api.security import add_security
from facesearch.api.workers import CpuPool, ServerBusy
from facesearch.catalog import CatalogConflict, CatalogError
from facesearch.engine import Engine
from facesearch.errors import FacesearchError, ImageError, NoFaceError
from facesearch.governance import AccountError, Governance, MissingJustification, PermissionDenied, UserInfo
from facesearch.governance.accounts import LoginThrottle
from facesearch.governance.audit import bounded_text
from facesearch.governance.lifecycle import AccountLifecycle, LifecycleDenied
from facesearch.governance.shared import SharedLoginThrottle
from facesearch.home import HomeBusyError
from facesearch.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from facesearch.metrics import render as render_metrics
from facesearch.metrics import set_queue_depth_source
from facesearch.pipeline import load_image
from facesearch.readiness import ModelCheck
from facesearch.settings import Settings, load_settings

SESSION_COOKIE = "fs_session"
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


def _store_upload(folder: Path, data: bytes, filename: str | None, engine: Engine) -> Path:
    """Our copy of an uploaded photo, named by a keyed hash of its content (no name, no plain hash)."""
    suffix = Path(filename or "").suffix.lower()[:8]
    path = folder / f"{engine.erasure.keyed_bytes(data)}{suffix}"
    path.write_bytes(data)
    return path


def _upright_jpeg(path: Path, rotation: int = 0) -> bytes:
    """The photo as the face boxes see it: EXIF applied, and turned as ingest turned a sideways scan."""
    from io import BytesIO

    import numpy as np
    from PIL import Image

    buffer = BytesIO()
    pixels = load_image(path)
    if rotation % 360:
        pixels = np.ascontiguousarray(np.rot90(pixels, -(rotation // 90) % 4))
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


RETENTION_ACTOR = UserInfo(0, "system:retention", "admin")


async def _refusal_flushes(gov: Governance, every_s: float = 60.0) -> None:
    """Write the counts of refused looks once their minute is over (see RefusalTally)."""
    while True:
        await asyncio.sleep(every_s)
        await asyncio.to_thread(gov.refusals.flush, time.monotonic())


def view_urls(face_id: int, token: str | None, thumbnail: bool = True) -> dict[str, str | None]:
    """The URLs of a face under a view grant: its details, its crop (if kept) and its photo."""
    query = f"?view={token}" if token else ""
    return {"details_url": f"/api/faces/{face_id}{query}",
            "thumbnail_url": f"/api/faces/{face_id}/thumbnail{query}" if thumbnail else None,
            "photo_url": f"/api/faces/{face_id}/photo{query}"}


async def _retention_sweeps(gov: Governance, every_s: float) -> None:
    """Erase what is past its retention period at start-up and then every ``every_s`` seconds."""
    while True:
        try:
            await asyncio.to_thread(gov.enforce_retention, RETENTION_ACTOR, apply=True)
        except HomeBusyError:
            pass  # an ingest holds the home: the next sweep will do it
        await asyncio.sleep(every_s)


CHECKPOINT_ACTOR = "system:checkpoint"


async def _checkpoint_sweeps(gov: Governance, every_s: float, export: list[str] | None) -> None:
    """Sign the audit chain head every ``every_s`` seconds (and at start-up); skipped when nothing
    was appended since the newest checkpoint. A failure is printed, never fatal to the server:
    ``facesearch audit verify`` is where a broken chain is reported."""
    import sys

    from facesearch.governance.checkpoints import AuditAnchor

    anchor = AuditAnchor(gov.audit, gov.engine.home)
    while True:
        try:
            await asyncio.to_thread(anchor.checkpoint, CHECKPOINT_ACTOR, export=export)
        except FacesearchError as exc:
            print(f"facesearch: audit checkpoint not written: {exc}", file=sys.stderr)
        await asyncio.sleep(every_s)


def create_app(engine: Engine, *, secure_cookies: bool = False, login_throttle: LoginThrottle | None = None,
               retention_every_s: float | None = None, settings: Settings | None = None,
               limits: ServerLimits | None = None, trusted_proxies: TrustedProxies | None = None,
               checkpoint_every_s: float | None = None, checkpoint_export: list[str] | None = None) -> FastAPI:
    settings = settings or load_settings(engine.home)
    gov = Governance(engine)
    lifecycle = AccountLifecycle(gov.accounts, gov.audit, engine)
    # Throttling and jobs live in the database: every API process of this home shares them.
    throttle = login_throttle or SharedLoginThrottle(engine.catalog)
    proxies = trusted_proxies or TrustedProxies(settings.trusted_proxies)
    jobs = JobRunner(engine.catalog)
    limits = limits or ServerLimits.from_settings(settings)
    # Every look at pixels or a model runs here, bounded: the event loop only routes requests.
    cpu = CpuPool(limits.cpu_workers, limits.cpu_queue, limits.request_time_limit_s)
    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        sweeper = asyncio.create_task(_retention_sweeps(gov, retention_every_s)) if retention_every_s else None
        flusher = asyncio.create_task(_refusal_flushes(gov))
        signer = (asyncio.create_task(_checkpoint_sweeps(gov, checkpoint_every_s, checkpoint_export))
                  if checkpoint_every_s else None)
        yield
        for task in (sweeper, signer, flusher):
            if task:
                task.cancel()
        gov.refusals.flush()  # the counts of refused looks still open go on record
        jobs.shutdown()  # let a running ingest finish its current image and save the index
        cpu.shutdown()

    app = FastAPI(title="facesearch", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Self-hosted, accountable face search. Every search needs a purpose and a case "
                              "reference and is written to a hash-chained audit log.")
    app.state.governance = gov
    app.state.jobs = jobs
    app.state.settings = settings
    app.state.cpu = cpu
    app.state.limits = limits
    set_queue_depth_source(lambda: cpu.depth)
    app.add_middleware(RequestLimits, max_body_bytes=limits.max_body_bytes, body_timeout_s=limits.body_timeout_s)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    add_security(app)

    # -- errors -> HTTP --------------------------------------------------------------------------
    status_of = [(PermissionDenied, 403), (LifecycleDenied, 403), (MissingJustification, 422), (NoFaceError, 422),
                 (ImageError, 400), (AccountError, 400), (HomeBusyError, 409), (ServerBusy, 503),
                 (CatalogConflict, 409), (CatalogError, 404),
                 (FacesearchError, 400)]

    @app.exception_handler(FacesearchError)
    async def facesearch_error(_request: Request, exc: FacesearchError) -> JSONResponse:
        code = next(code for kind, code in status_of if isinstance(exc, kind))
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, ServerBusy) else None
        return JSONResponse({"detail": str(exc)}, status_code=code, headers=headers)

    @app.exception_handler(MemoryError)
    async def out_of_memory(_request: Request, _exc: MemoryError) -> JSONResponse:
        return JSONResponse({"detail": "not enough memory for this request right now: try again later"},
                            status_code=503, headers={"Retry-After": "30"})

    # -- authentication ----------------------------------------------------------------------------

    def actor(request: Request) -> Actor:
        auth = request.headers.get("authorization", "")
        key = request.headers.get("x-api-key") or (auth[7:] if auth.lower().startswith("bearer ") else "")
        if key:
            user = gov.accounts.user_for_api_key(key)
            if user is None:
                raise HTTPException(401, "invalid or revoked API key")
            request.state.user = user.username  # for the access log
            return Actor(user, "api_key")
        token = request.cookies.get(SESSION_COOKIE)
        found = gov.accounts.session_user(token) if token else None
        if found is None:
            raise HTTPException(401, "log in first (session cookie or API key required)")
        user, csrf = found
        request.state.user = user.username  # for the access log
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

    models_check = ModelCheck()

    @app.get("/ready", tags=["public"], responses={503: {"description": "not ready: the reason is in the body"}})
    def ready() -> JSONResponse:
        state = readiness.check(engine, models=models_check, disk_floor_bytes=settings.disk_floor_mb * 1024 * 1024)
        return JSONResponse(state.to_dict(), status_code=200 if state.ready else 503)

    @app.get("/metrics", tags=["public"], response_class=Response,
             responses={403: {"description": "only loopback and the FACESEARCH_METRICS_ALLOW networks"}})
    def metrics(request: Request) -> Response:
        if not metrics_peer_allowed(settings, request.scope):
            raise HTTPException(403, "metrics are served to loopback and FACESEARCH_METRICS_ALLOW only")
        return Response(render_metrics(engine), media_type=METRICS_CONTENT_TYPE)

    @app.post("/api/login", response_model=schemas.LoginResponse, tags=["auth"],
              responses={429: {"description": "too many failed attempts: wait Retry-After seconds"}})
    def login(body: schemas.LoginRequest, request: Request, response: Response) -> schemas.LoginResponse:
        """Throttled per (username, client) with growing delays and per client; the client is the
        TCP peer unless that is a trusted proxy (``--trusted-proxy``). Audited under the submitted
        username, folded to a bounded length."""
        client, peer = request_client(request, proxies)
        where = {"client": client} | ({"proxy": peer} if peer != client else {})
        name = bounded_text(body.username)
        wait = throttle.wait_s(body.username, client)
        if wait > 0:
            if throttle.first_refusal(body.username, client):  # one record per blocking period
                gov.audit.append(name, "login_throttled", {**where, "retry_after_s": round(wait)})
            raise HTTPException(429, "too many failed login attempts: try again later",
                                headers={"Retry-After": str(int(wait) + 1)})
        user = gov.accounts.check_password(body.username, body.password)
        gov.audit.append(name, "login", {"ok": user is not None, **where})
        if user is None:
            throttle.failed(body.username, client)
            raise HTTPException(401, "wrong username or password")
        throttle.succeeded(body.username, client)
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

    @app.post("/api/me/password", tags=["auth"])
    def change_own_password(body: schemas.PasswordChange, who: Anyone) -> dict:
        lifecycle.change_own_password(who.user, body.current_password, body.new_password)
        return {"ok": True}

    @app.get("/api/me/api-keys", response_model=list[schemas.ApiKeyInfoOut], tags=["auth"])
    def my_api_keys(who: Anyone) -> list[schemas.ApiKeyInfoOut]:
        return [schemas.ApiKeyInfoOut(**k.__dict__) for k in lifecycle.api_keys(who.user)]

    @app.post("/api/me/api-keys", response_model=schemas.ApiKeyOut, status_code=201, tags=["auth"])
    def new_own_api_key(who: Anyone, body: schemas.NewApiKey | None = None) -> schemas.ApiKeyOut:
        key_id, secret = lifecycle.issue_api_key(who.user, label=body.label if body else "")
        return schemas.ApiKeyOut(api_key=secret, id=key_id)

    # -- users (admin) -----------------------------------------------------------------------------

    def user_out(user: UserInfo) -> schemas.UserOut:
        return schemas.UserOut(**user.__dict__, grants=gov.accounts.grants_of(user.username))

    @app.get("/api/users", response_model=list[schemas.UserOut], tags=["users"])
    def list_users(who: Admin) -> list[schemas.UserOut]:
        return [user_out(u) for u in gov.accounts.users()]

    @app.post("/api/users", response_model=schemas.UserOut, status_code=201, tags=["users"])
    def add_user(body: schemas.NewUser, who: Admin) -> schemas.UserOut:
        return user_out(lifecycle.add_user(who.user, body.username, body.password, body.role))

    @app.post("/api/users/{username}/deactivate", response_model=schemas.UserOut, tags=["users"])
    def deactivate_user(username: str, who: Admin) -> schemas.UserOut:
        return user_out(lifecycle.deactivate(who.user, username))

    @app.post("/api/users/{username}/reactivate", response_model=schemas.UserOut, tags=["users"])
    def reactivate_user(username: str, who: Admin) -> schemas.UserOut:
        return user_out(lifecycle.reactivate(who.user, username))

    @app.post("/api/users/{username}/role", response_model=schemas.UserOut, tags=["users"])
    def change_role(username: str, body: schemas.RoleChange, who: Admin) -> schemas.UserOut:
        return user_out(lifecycle.set_role(who.user, username, body.role))

    @app.post("/api/users/{username}/password", tags=["users"])
    def reset_password(username: str, body: schemas.PasswordReset, who: Admin) -> dict:
        """Set a user's password (their sessions end). Recorded as this admin's reset."""
        lifecycle.reset_password(who.user, username, body.password)
        return {"ok": True}

    @app.post("/api/users/{username}/api-keys", response_model=schemas.ApiKeyOut, status_code=201, tags=["users"])
    def new_api_key(username: str, who: Admin) -> schemas.ApiKeyOut:
        """Only for oneself: a key for another user would let the admin act as them (refused, 403)."""
        key_id, secret = lifecycle.issue_api_key(who.user, username, label=f"issued by {who.user.username}")
        return schemas.ApiKeyOut(api_key=secret, id=key_id)

    @app.get("/api/users/{username}/api-keys", response_model=list[schemas.ApiKeyInfoOut], tags=["users"])
    def list_api_keys(username: str, who: Admin) -> list[schemas.ApiKeyInfoOut]:
        return [schemas.ApiKeyInfoOut(**k.__dict__) for k in lifecycle.api_keys(who.user, username)]

    @app.delete("/api/users/{username}/api-keys/{key_id}", response_model=schemas.ApiKeyInfoOut, tags=["users"])
    def revoke_api_key(username: str, key_id: int, who: Admin) -> schemas.ApiKeyInfoOut:
        return schemas.ApiKeyInfoOut(**lifecycle.revoke_api_key(who.user, key_id, username).__dict__)

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
        lifecycle.grant(who.user, body.username, name)
        return {"ok": True}

    @app.delete("/api/collections/{name}/grants/{username}", tags=["collections"])
    def revoke(name: str, username: str, who: Admin) -> dict:
        lifecycle.revoke_grant(who.user, username, name)
        return {"ok": True}

    def start_ingest(who: Actor, name: str, paths: list[Path], kind: str,
                     allow_erased: bool = False) -> schemas.JobOut:
        engine.collection(name)  # 404 before queuing

        def work(job) -> None:
            def progress(done, total, summary) -> None:
                job.done, job.total = done, total
                job.images_indexed, job.faces_indexed = summary.images_indexed, summary.faces_indexed

            try:
                summary = gov.ingest(who.user, paths, name, create=False, progress=False, on_progress=progress,
                                     allow_erased=allow_erased)
            finally:
                if kind == "upload":  # our copies that show no indexed face are not kept, also after a failure
                    engine.drop_unused_uploads(paths)
            job.failed = [list(x) for x in summary.failed]
            job.skipped = [list(x) for x in summary.skipped]
            job.erased_earlier = summary.erased_earlier

        return schemas.JobOut(**jobs.submit(name, kind, work).to_dict())

    @app.post("/api/collections/{name}/photos", response_model=schemas.JobOut, status_code=202,
              tags=["collections"])
    async def upload_photos(name: str, who: Admin, files: Annotated[list[UploadFile], File()]) -> schemas.JobOut:
        if len(files) > settings.max_upload_files:
            raise HTTPException(413, f"at most {settings.max_upload_files} files per upload")
        info = engine.collection(name)
        target = engine.uploads / f"c{info.id}"
        target.mkdir(parents=True, exist_ok=True)
        saved: list[Path] = []
        try:
            for upload in files:
                data = await upload.read(settings.max_upload_bytes + 1)
                if len(data) > settings.max_upload_bytes:
                    raise HTTPException(413, f"{upload.filename}: larger than {settings.max_upload_bytes:,} bytes")
                saved.append(await asyncio.to_thread(_store_upload, target, data, upload.filename, engine))
            return start_ingest(who, name, saved, "upload")
        except BaseException:
            # Never an orphan: an upload is either handed to a job (which catalogues or removes
            # each file) or removed here.
            engine.drop_unused_uploads(saved)
            raise

    @app.post("/api/collections/{name}/ingest-folder", response_model=schemas.JobOut, status_code=202,
              tags=["collections"])
    def ingest_folder(name: str, body: schemas.FolderIngest, who: Admin) -> schemas.JobOut:
        folder = limits.allowed_ingest_folder(body.path, engine.home)
        return start_ingest(who, name, [folder], "folder", body.allow_erased)

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
                     face: Annotated[int | None, Form()] = None,
                     include_weaker: Annotated[bool, Form(description="also return candidates below the threshold "
                                                                      "(recorded in the audit log)")] = False,
                     ) -> schemas.SearchOut:
        data = await read_probe(probe)
        result = await cpu.run(gov.search, who.user, data, purpose=purpose, case_ref=case_ref,
                               collections=collections or None, top_k=top_k, face_index=face,
                               probe_name=probe.filename or "probe", include_weaker=include_weaker)
        return search_out(result, who.user, purpose, case_ref, include_weaker)

    def search_out(result, user: UserInfo, purpose: str, case_ref: str, include_weaker: bool) -> schemas.SearchOut:
        # the faces this (audited) search shows may be looked at, under its purpose, for an hour
        token = gov.grant_for(user, result.audit_id, purpose=purpose, case_ref=case_ref,
                              face_ids=[c.face_id for c in result.candidates]) if result.audit_id else None
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
            threshold_rule=result.threshold_rule, warnings=result.warnings, include_weaker=include_weaker,
            weaker_withheld=result.weaker_withheld, view_token=token,
            candidates=[schemas.CandidateOut(
                rank=c.rank, face_id=c.face_id, similarity=c.similarity, above_threshold=c.above_threshold,
                false_match_rate=c.false_match.rate if c.false_match else None,
                false_match_extrapolated=c.false_match.extrapolated if c.false_match else False,
                false_match_fpir=c.false_match.fpir if c.false_match else None,
                false_match_words=c.false_match.words if c.false_match else None, collection=c.collection,
                image_id=c.image_id, box=c.box, quality=c.quality,
                thumbnail_url=view_urls(c.face_id, token, bool(c.thumbnail))["thumbnail_url"],
                photo_url=view_urls(c.face_id, token)["photo_url"], media=c.media, timestamp_s=c.timestamp_s,
                track_id=c.track_id, track_span=c.track_span, track_faces=list(c.track_faces),
                track_hits=c.track_hits) for c in result.candidates])

    @app.post("/api/verify", response_model=schemas.VerifyOut, tags=["search"])
    async def verify(who: Searcher, a: Annotated[UploadFile, File()], b: Annotated[UploadFile, File()],
                     purpose: Annotated[str, Form(min_length=1)], case_ref: Annotated[str, Form(min_length=1)],
                     face_a: Annotated[int | None, Form()] = None,
                     face_b: Annotated[int | None, Form()] = None) -> schemas.VerifyOut:
        result = await cpu.run(gov.verify, who.user, await read_probe(a), await read_probe(b), purpose=purpose,
                               case_ref=case_ref, face_a=face_a, face_b=face_b,
                               names=(a.filename or "a", b.filename or "b"))
        data = result.to_dict()
        return schemas.VerifyOut(**{k: data[k] for k in schemas.VerifyOut.model_fields if k != "faces"},
                                 faces=[dict(f) for f in data["faces"]])

    # -- faces and photos --------------------------------------------------------------------------

    ViewToken = Annotated[str | None, Query(alias="view", max_length=100,
                                            description="the view grant of the search or view that showed the face")]

    @app.post("/api/views", response_model=schemas.ViewGrantOut, status_code=201, tags=["faces"])
    def grant_view(body: schemas.ViewRequest, who: Searcher) -> schemas.ViewGrantOut:
        """Look at faces named by id, without a search: the purpose and case are recorded first."""
        token = gov.grant_view(who.user, body.face_ids, purpose=body.purpose, case_ref=body.case_ref)
        return schemas.ViewGrantOut(view_token=token, faces={f: view_urls(f, token) for f in body.face_ids})

    @app.get("/api/faces/{face_id}", response_model=schemas.FaceOut, tags=["faces"])
    def face(face_id: schemas.RowIdPath, who: Searcher, view: ViewToken = None) -> schemas.FaceOut:
        info = gov.face_details(who.user, face_id, view)
        if info.is_video:  # its photo is the stored frame: one face, boxed in the frame's own pixels
            box = frame_box(info, gov.photo_path(info))
            others = [{"face_id": info.id, "box": box, "quality": info.quality}]
        else:
            box = info.box
            others = [{"face_id": f.id, "box": f.box, "quality": f.quality}
                      for f in engine.catalog.image_faces(info.image_id)]
        return schemas.FaceOut(face_id=info.id, image_id=info.image_id, collection=info.collection, box=box,
                               quality=info.quality, quality_issues=list(info.quality_issues),
                               thumbnail_url=view_urls(face_id, view, bool(info.thumbnail))["thumbnail_url"],
                               photo_url=view_urls(face_id, view)["photo_url"], image_faces=others, media=info.media,
                               timestamp_s=info.timestamp_s, track_id=info.track_id, track_span=info.track_span,
                               source_name=source_name(info.image_source, engine.uploads),
                               captured_at=None if info.is_video else capture_time(Path(info.image_source)))

    @app.get("/api/faces/{face_id}/thumbnail", tags=["faces"], response_class=FileResponse)
    def thumbnail(face_id: schemas.RowIdPath, who: Searcher, view: ViewToken = None) -> FileResponse:
        path = gov.thumbnail(who.user, face_id, view)
        if not path.is_file():
            raise HTTPException(404, "thumbnail missing (run facesearch doctor)")
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})

    @app.get("/api/faces/{face_id}/photo", tags=["faces"])
    async def photo(face_id: schemas.RowIdPath, who: Searcher, view: ViewToken = None) -> Response:
        access = await asyncio.to_thread(gov.photo, who.user, face_id, view)
        if not access.path.is_file():
            raise HTTPException(404, "the source photo is no longer at its recorded path")
        if access.is_video_frame:
            return FileResponse(access.path, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})
        # Re-encoded upright (browsers differ on EXIF orientation; the boxes are for the upright image).
        jpeg = await cpu.run(_upright_jpeg, access.path, access.rotation)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})

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
        report = await cpu.run(gov.erase, who.user, like=await read_probe(probe), min_score=min_score, reason=reason)
        return schemas.EraseOut(**report.__dict__)

    @app.post("/api/retention", response_model=schemas.RetentionOut, tags=["erasure"])
    def retention(body: schemas.RetentionRequest, who: Admin) -> schemas.RetentionOut:
        """What is kept past its collection's retention period; ``apply`` erases it (audited).
        The server also does this at start and every few hours (``facesearch serve --retention-hours``)."""
        return schemas.RetentionOut(**gov.enforce_retention(who.user, apply=body.apply).__dict__)

    @app.post("/api/optouts", status_code=201, tags=["erasure"])
    async def opt_out(who: Admin, probe: Annotated[UploadFile, File()],
                      reference: Annotated[str, Form(min_length=1)]) -> dict:
        optout_id = await cpu.run(gov.opt_out, who.user, await read_probe(probe), reference)
        return {"id": optout_id, "threshold": gov.optouts.threshold}

    @app.get("/api/optouts", tags=["erasure"])
    def list_optouts(who: Admin) -> list[dict]:
        return gov.opt_outs(who.user)

    @app.delete("/api/optouts/{optout_id}", tags=["erasure"])
    def withdraw_optout(optout_id: int, who: Admin, reason: str = "") -> dict:
        gov.withdraw_opt_out(who.user, optout_id, reason)
        return {"id": optout_id, "withdrawn": True}

    # -- audit (auditor) ---------------------------------------------------------------------------

    def audit_filters(actor_name: str | None, action: str | None, case_ref: str | None, since: str | None,
                      until: str | None, purpose: str | None = None) -> dict:
        return {"actor": actor_name, "action": action, "case_ref": case_ref, "since": since, "until": until,
                "purpose": purpose}

    @app.get("/api/audit", response_model=list[schemas.AuditOut], tags=["audit"])
    def audit_log(who: Auditor, actor_name: Annotated[str | None, Query(alias="actor")] = None,
                  action: str | None = None, case_ref: str | None = None, since: str | None = None,
                  until: str | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
                  purpose: Annotated[str | None, Query(max_length=500, description="purpose contains")] = None,
                  ) -> list:
        entries = gov.audit.entries(**audit_filters(actor_name, action, case_ref, since, until, purpose),
                                    limit=limit, newest_first=True)
        gov.audit.append(who.user.username, "audit_read", {"returned": len(entries)})
        return [schemas.AuditOut(**e.to_dict()) for e in entries]

    @app.get("/api/audit/export", tags=["audit"])
    def audit_export(who: Auditor, actor_name: Annotated[str | None, Query(alias="actor")] = None,
                     action: str | None = None, case_ref: str | None = None, since: str | None = None,
                     until: str | None = None,
                     purpose: Annotated[str | None, Query(max_length=500)] = None) -> StreamingResponse:
        entries = gov.audit.entries(**audit_filters(actor_name, action, case_ref, since, until, purpose))
        gov.audit.append(who.user.username, "audit_export", {"returned": len(entries)})
        lines = (json.dumps(e.to_dict(), sort_keys=True) + "\n" for e in entries)
        return StreamingResponse(lines, media_type="application/x-ndjson",
                                 headers={"Content-Disposition": "attachment; filename=facesearch-audit.jsonl"})

    @app.get("/api/audit/verify", response_model=schemas.AuditCheckOut, tags=["audit"])
    def audit_verify(who: Auditor) -> schemas.AuditCheckOut:
        from facesearch.governance.checkpoints import AuditAnchor

        check = AuditAnchor(gov.audit, engine.home).verify(export=checkpoint_export)  # chain + signed checkpoints
        return schemas.AuditCheckOut(**check.to_dict())

    from facesearch.api.subjects import add_subject_routes  # galleries, subjects, matching, decisions
    from facesearch.api.web import add_web_routes

    add_subject_routes(app, gov, role, cpu)
    from facesearch.api.clusters import add_cluster_routes  # clusters of unknown faces

    add_cluster_routes(app, gov, role, cpu)
    add_web_routes(app, gov)
    # Last, so outermost: every answer is logged and timed, those of other middleware (413, 503) too.
    app.add_middleware(ObservabilityMiddleware)

    return app
