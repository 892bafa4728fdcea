"""Erasure, retention and opt-outs (admin): each goes through governance, which records it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from facesearch.api import schemas
from facesearch.api.deps import Ctx, Eraser
from facesearch.api.routers.search import read_probe

router = APIRouter(tags=["erasure"])


@router.post("/api/erase", response_model=schemas.EraseOut)
def erase(body: schemas.EraseRequest, who: Eraser, ctx: Ctx) -> schemas.EraseOut:
    report = ctx.gov.erase(who.user, faces=body.faces, images=body.images, collection=body.collection,
                           reason=body.reason)
    return schemas.EraseOut(**report.__dict__)


@router.post("/api/erase/like", response_model=schemas.EraseOut)
async def erase_like(who: Eraser, ctx: Ctx, probe: Annotated[UploadFile, File()],
                     min_score: Annotated[float, Form(gt=0.0, le=1.0)],
                     reason: Annotated[str, Form()] = "") -> schemas.EraseOut:
    report = await ctx.cpu.run(ctx.gov.erase, who.user, like=await read_probe(probe), min_score=min_score,
                               reason=reason)
    return schemas.EraseOut(**report.__dict__)


@router.post("/api/retention", response_model=schemas.RetentionOut)
def retention(body: schemas.RetentionRequest, who: Eraser, ctx: Ctx) -> schemas.RetentionOut:
    """What is kept past its collection's retention period; ``apply`` erases it (audited).
    The server also does this at start and every few hours (``facesearch serve --retention-hours``)."""
    return schemas.RetentionOut(**ctx.gov.enforce_retention(who.user, apply=body.apply).__dict__)


@router.post("/api/optouts", status_code=201)
async def opt_out(who: Eraser, ctx: Ctx, probe: Annotated[UploadFile, File()],
                  reference: Annotated[str, Form(min_length=1)]) -> dict:
    optout_id = await ctx.cpu.run(ctx.gov.opt_out, who.user, await read_probe(probe), reference)
    return {"id": optout_id, "threshold": ctx.gov.optouts.threshold}


@router.get("/api/optouts")
def list_optouts(who: Eraser, ctx: Ctx) -> list[dict]:
    return ctx.gov.opt_outs(who.user)


@router.delete("/api/optouts/{optout_id}")
def withdraw_optout(optout_id: int, who: Eraser, ctx: Ctx, reason: str = "") -> dict:
    ctx.gov.withdraw_opt_out(who.user, optout_id, reason)
    return {"id": optout_id, "withdrawn": True}
