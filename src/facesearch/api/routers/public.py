"""Routes that need no user: ``/health``, ``/ready`` and ``/metrics`` (loopback and the
networks in FACESEARCH_METRICS_ALLOW only)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from facesearch import readiness
from facesearch.api.deps import Ctx
from facesearch.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from facesearch.api.metrics import render as render_metrics
from facesearch.api.observability import metrics_peer_allowed

router = APIRouter(tags=["public"])


@router.get("/health")
def health() -> dict:
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "not ready: the reason is in the body"}})
def ready(ctx: Ctx) -> JSONResponse:
    state = readiness.check(ctx.engine, models=ctx.models_check,
                            disk_floor_bytes=ctx.settings.disk_floor_mb * 1024 * 1024)
    return JSONResponse(state.to_dict(), status_code=200 if state.ready else 503)


@router.get("/metrics", response_class=Response,
            responses={403: {"description": "only loopback and the FACESEARCH_METRICS_ALLOW networks"}})
def metrics(request: Request, ctx: Ctx) -> Response:
    if not metrics_peer_allowed(ctx.settings, request.scope):
        raise HTTPException(403, "metrics are served to loopback and FACESEARCH_METRICS_ALLOW only")
    return Response(render_metrics(ctx.engine), media_type=METRICS_CONTENT_TYPE)
