"""The audit log (auditor): read, export as JSON lines, and verify the chain and its signed
checkpoints. Reading and exporting are themselves recorded."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from facesearch.api import schemas
from facesearch.api.deps import Auditor, Ctx
from facesearch.governance.checkpoints import AuditAnchor

router = APIRouter(tags=["audit"])


def audit_filters(actor: Annotated[str | None, Query()] = None, action: str | None = None,
                  case_ref: str | None = None, since: str | None = None, until: str | None = None,
                  purpose: Annotated[str | None, Query(max_length=500, description="purpose contains")] = None,
                  ) -> dict:
    """The filters of a read or an export, as query parameters."""
    return {"actor": actor, "action": action, "case_ref": case_ref, "since": since, "until": until,
            "purpose": purpose}


Filters = Annotated[dict, Depends(audit_filters)]


@router.get("/api/audit", response_model=list[schemas.AuditOut])
def audit_log(who: Auditor, ctx: Ctx, filters: Filters,
              limit: Annotated[int, Query(ge=1, le=10_000)] = 500) -> list:
    entries = ctx.gov.read_audit(who.user, limit=limit, newest_first=True, **filters)
    return [schemas.AuditOut(**e.to_dict()) for e in entries]


@router.get("/api/audit/export")
def audit_export(who: Auditor, ctx: Ctx, filters: Filters) -> StreamingResponse:
    entries = ctx.gov.read_audit(who.user, export=True, **filters)
    lines = (json.dumps(e.to_dict(), sort_keys=True) + "\n" for e in entries)
    return StreamingResponse(lines, media_type="application/x-ndjson",
                             headers={"Content-Disposition": "attachment; filename=facesearch-audit.jsonl"})


@router.get("/api/audit/verify", response_model=schemas.AuditCheckOut)
def audit_verify(who: Auditor, ctx: Ctx) -> schemas.AuditCheckOut:
    anchor = AuditAnchor(ctx.gov.audit, ctx.engine.home)
    check = anchor.verify(export=ctx.checkpoint_export)  # the chain and the signed checkpoints
    return schemas.AuditCheckOut(**check.to_dict())
