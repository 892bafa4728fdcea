"""The facesearch server: a FastAPI app over the governed engine, plus the web app.

``create_app`` builds the server's parts once (:class:`~facesearch.api.deps.ServerContext`),
maps errors to HTTP statuses, starts the background sweeps and includes the routers of
:mod:`facesearch.api.routers`, one module per area. Every route needs a user (session cookie +
CSRF header, or an API key) except ``/health``, ``/ready`` (public) and login; ``/metrics``
answers loopback and the networks in FACESEARCH_METRICS_ALLOW only. Roles are checked by the
dependencies of :mod:`facesearch.api.deps` against governance's one permission table, before
the request body is looked at, so a caller without the right role gets 403 whatever it sends;
a search without purpose or case reference gets 422.

Faces are looked at only under a view grant (see :mod:`facesearch.governance.views`): the
search, subject or cluster view that shows faces issues one, and the URLs it returns carry it
(``?view=...``, :mod:`facesearch.api.urls`); ``POST /api/views`` issues one for faces named by id
with a purpose and a case. Security headers, the cross-site guard and the offline ``/docs`` are in
:mod:`facesearch.api.security`. CPU work (decode, detect, embed, clustering) runs on a bounded pool
(:mod:`facesearch.api.workers`); request bodies are limited in size and pace (:mod:`facesearch.api.limits`).
"""

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from facesearch.api.deps import ServerContext
from facesearch.api.jobs import JobRunner
from facesearch.api.limits import RequestLimits, ServerLimits
from facesearch.api.observability import ObservabilityMiddleware
from facesearch.api.proxies import TrustedProxies
from facesearch.api.routers import ROUTERS
from facesearch.api.security import add_security
from facesearch.api.workers import CpuPool, ServerBusy
from facesearch.catalog import CatalogConflict, CatalogError
from facesearch.errors import FacesearchError, ImageError, IndexUnavailable, NoFaceError
from facesearch.governance import AccountError, Governance, MissingJustification, PermissionDenied, UserInfo
from facesearch.governance.accounts import LoginThrottle
from facesearch.governance.clusters import ClusterGovernance
from facesearch.governance.lifecycle import AccountLifecycle, LifecycleDenied
from facesearch.governance.policy import ADMIN
from facesearch.governance.shared import SharedLoginThrottle
from facesearch.governance.subjects import SubjectGovernance
from facesearch.home import HomeBusyError
from facesearch.metrics import set_queue_depth_source
from facesearch.services.engine import Engine
from facesearch.settings import Settings, load_settings

log = logging.getLogger(__name__)

#: errors -> HTTP statuses, the first that matches (so the most specific first)
STATUS_OF: list[tuple[type[Exception], int]] = [
    (PermissionDenied, 403), (LifecycleDenied, 403), (MissingJustification, 422), (NoFaceError, 422),
    (ImageError, 400), (AccountError, 400), (HomeBusyError, 409), (ServerBusy, 503),
    (IndexUnavailable, 503), (CatalogConflict, 409), (CatalogError, 404), (FacesearchError, 400)]

RETENTION_ACTOR = UserInfo(0, "system:retention", ADMIN)
CHECKPOINT_ACTOR = "system:checkpoint"


async def _refusal_flushes(gov: Governance, every_s: float = 60.0) -> None:
    """Write the counts of refused looks once their minute is over (see RefusalTally)."""
    while True:
        await asyncio.sleep(every_s)
        await asyncio.to_thread(gov.refusals.flush, time.monotonic())


async def _retention_sweeps(gov: Governance, every_s: float) -> None:
    """Erase what is past its retention period at start-up and then every ``every_s`` seconds."""
    while True:
        try:
            await asyncio.to_thread(gov.enforce_retention, RETENTION_ACTOR, apply=True)
        except HomeBusyError:
            log.info("retention sweep skipped: an ingest holds the home (the next sweep will do it)")
        await asyncio.sleep(every_s)


async def _checkpoint_sweeps(gov: Governance, every_s: float, export: list[str] | None) -> None:
    """Sign the audit chain head every ``every_s`` seconds (and at start-up); skipped when nothing
    was appended since the newest checkpoint. A failure is logged, never fatal to the server:
    ``facesearch audit verify`` is where a broken chain is reported."""
    from facesearch.governance.checkpoints import AuditAnchor

    anchor = AuditAnchor(gov.audit, gov.engine.home)
    while True:
        try:
            await asyncio.to_thread(anchor.checkpoint, CHECKPOINT_ACTOR, export=export)
        except FacesearchError as exc:
            log.error("audit checkpoint not written: %s", exc)
        await asyncio.sleep(every_s)


def error_detail(exc: Exception, code: int) -> str | list[dict[str, object]]:
    """The ``detail`` of an error answer. A 422 always has the one shape the OpenAPI schema
    documents for it (FastAPI's ``HTTPValidationError``: a list of ``{loc, msg, type}``), whether
    FastAPI's validation refused the request or governance did (a blank purpose or case passes the
    form's validation and is refused by ``policy.justify``); clients read one shape. Other
    statuses carry the message as a string."""
    if code != 422:
        return str(exc)
    kind = "".join(f"_{c.lower()}" if c.isupper() else c for c in type(exc).__name__).lstrip("_")
    return [{"loc": ["body"], "msg": str(exc), "type": kind}]


def _add_error_map(app: FastAPI) -> None:
    @app.exception_handler(FacesearchError)
    async def facesearch_error(_request: Request, exc: FacesearchError) -> JSONResponse:
        code = next(code for kind, code in STATUS_OF if isinstance(exc, kind))
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, ServerBusy) else None
        if code >= 500:  # the server could not serve it (busy): worth an operator's look if it keeps happening
            log.warning("%s %s: %d %s", _request.method, _request.url.path, code, exc)
        if isinstance(exc, IndexUnavailable):
            headers = {"Retry-After": "30"}
            return JSONResponse({"detail": exc.public_detail}, status_code=code, headers=headers)
        return JSONResponse({"detail": error_detail(exc, code)}, status_code=code, headers=headers)

    @app.exception_handler(MemoryError)
    async def out_of_memory(_request: Request, _exc: MemoryError) -> JSONResponse:
        log.error("out of memory answering %s %s", _request.method, _request.url.path)
        return JSONResponse({"detail": "not enough memory for this request right now: try again later"},
                            status_code=503, headers={"Retry-After": "30"})


def create_app(engine: Engine, *, secure_cookies: bool = False, login_throttle: LoginThrottle | None = None,
               retention_every_s: float | None = None, settings: Settings | None = None,
               limits: ServerLimits | None = None, trusted_proxies: TrustedProxies | None = None,
               checkpoint_every_s: float | None = None, checkpoint_export: list[str] | None = None) -> FastAPI:
    settings = settings or load_settings(engine.home)
    gov = Governance(engine)
    limits = limits or ServerLimits.from_settings(settings)
    ctx = ServerContext(
        gov=gov, lifecycle=AccountLifecycle(gov.accounts, gov.audit, engine), subjects=SubjectGovernance(gov),
        clusters=ClusterGovernance(gov), settings=settings, limits=limits,
        # Every look at pixels or a model runs here, bounded: the event loop only routes requests.
        cpu=CpuPool(limits.cpu_workers, limits.cpu_queue, limits.request_time_limit_s),
        # throttling and jobs live in the database: every API process of this home shares them
        jobs=JobRunner(engine.catalog), throttle=login_throttle or SharedLoginThrottle(engine.catalog),
        proxies=trusted_proxies or TrustedProxies(settings.trusted_proxies),
        secure_cookies=secure_cookies, checkpoint_export=checkpoint_export)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        sweeper = asyncio.create_task(_retention_sweeps(gov, retention_every_s)) if retention_every_s else None
        flusher = asyncio.create_task(_refusal_flushes(gov))
        signer = (asyncio.create_task(_checkpoint_sweeps(gov, checkpoint_every_s, checkpoint_export))
                  if checkpoint_every_s else None)
        log.info("serving %s (%d CPU workers)", engine.home, limits.cpu_workers)
        yield
        for task in (sweeper, signer, flusher):
            if task:
                task.cancel()
        gov.refusals.flush()  # the counts of refused looks still open go on record
        ctx.jobs.shutdown()  # let a running ingest finish its current image and save the index
        ctx.cpu.shutdown()
        log.info("stopped serving %s", engine.home)

    app = FastAPI(title="facesearch", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Self-hosted, accountable face search. Every search needs a purpose and a case "
                              "reference and is written to a hash-chained audit log.")
    app.state.context = ctx
    app.state.governance, app.state.cpu, app.state.limits = gov, ctx.cpu, limits  # for tests and tools
    set_queue_depth_source(lambda: ctx.cpu.depth)
    app.add_middleware(RequestLimits, max_body_bytes=limits.max_body_bytes, body_timeout_s=limits.body_timeout_s)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    add_security(app)
    _add_error_map(app)
    for router in ROUTERS:
        # Added flat, not as a lazily included router, so that ``app.routes`` lists every route (the
        # route table tests and the OpenAPI document walk it) and each request names its route template.
        app.router.routes.extend(router.routes)
    # Last, so outermost: every answer is logged and timed, those of other middleware (413, 503) too.
    app.add_middleware(ObservabilityMiddleware)
    return app
