"""Searching and verifying with a probe photo: a purpose and a case reference on every request
(422 without), checked and audited by governance; the candidates' URLs carry the view grant the
search issues."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, UploadFile

from facesearch.api import schemas
from facesearch.api.deps import Ctx, Searcher, ServerContext
from facesearch.api.urls import candidate_fields
from facesearch.governance import UserInfo
from facesearch.search import SearchResult

MAX_PROBE_BYTES = 25 * 1024 * 1024

router = APIRouter(tags=["search"])


async def read_probe(upload: UploadFile) -> bytes:
    data = await upload.read(MAX_PROBE_BYTES + 1)
    if len(data) > MAX_PROBE_BYTES:
        raise HTTPException(413, f"probe larger than {MAX_PROBE_BYTES // 2**20} MB")
    return data


@router.post("/api/search", response_model=schemas.SearchOut)
async def search(who: Searcher, ctx: Ctx, probe: Annotated[UploadFile, File()],
                 purpose: Annotated[str, Form(min_length=1)], case_ref: Annotated[str, Form(min_length=1)],
                 collections: Annotated[list[str] | None, Form()] = None,
                 top_k: Annotated[int, Form(ge=1, le=200)] = 20,
                 face: Annotated[int | None, Form()] = None,
                 include_weaker: Annotated[bool, Form(description="also return candidates below the threshold "
                                                                  "(recorded in the audit log)")] = False,
                 ) -> schemas.SearchOut:
    data = await read_probe(probe)
    result = await ctx.cpu.run(ctx.gov.search, who.user, data, purpose=purpose, case_ref=case_ref,
                               collections=collections or None, top_k=top_k, face_index=face,
                               probe_name=probe.filename or "probe", include_weaker=include_weaker)
    return search_out(ctx, result, who.user, purpose, case_ref, include_weaker)


def search_out(ctx: ServerContext, result: SearchResult, user: UserInfo, purpose: str, case_ref: str,
               include_weaker: bool) -> schemas.SearchOut:
    # the faces this (audited) search shows may be looked at, under its purpose, for an hour
    token = ctx.gov.grant_for(user, result.audit_id, purpose=purpose, case_ref=case_ref,
                              face_ids=[c.face_id for c in result.candidates]) if result.audit_id else None
    probe, probe_faces = None, []
    if result.probe is not None:
        p = result.probe
        probe_faces = list(p.face_boxes)
        probe = schemas.ProbeOut(**{name: getattr(p, name) for name in schemas.ProbeOut.model_fields})
    data = result.to_dict()
    return schemas.SearchOut(
        verdict=data["verdict"], confident_match=data["confident_match"], probe=probe, probe_faces=probe_faces,
        collections=result.collections, faces_searched=result.faces_searched, threshold=result.threshold,
        threshold_rule=result.threshold_rule, warnings=result.warnings, include_weaker=include_weaker,
        weaker_withheld=result.weaker_withheld, view_token=token,
        candidates=[schemas.CandidateOut(**candidate_fields(c, token)) for c in result.candidates])


@router.post("/api/verify", response_model=schemas.VerifyOut)
async def verify(who: Searcher, ctx: Ctx, a: Annotated[UploadFile, File()], b: Annotated[UploadFile, File()],
                 purpose: Annotated[str, Form(min_length=1)], case_ref: Annotated[str, Form(min_length=1)],
                 face_a: Annotated[int | None, Form()] = None,
                 face_b: Annotated[int | None, Form()] = None) -> schemas.VerifyOut:
    result = await ctx.cpu.run(ctx.gov.verify, who.user, await read_probe(a), await read_probe(b), purpose=purpose,
                               case_ref=case_ref, face_a=face_a, face_b=face_b,
                               names=(a.filename or "a", b.filename or "b"))
    return schemas.VerifyOut(**result.to_dict())
