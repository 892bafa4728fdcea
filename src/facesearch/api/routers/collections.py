"""Collections: list the granted ones, create one, grant it, and fill it (photo uploads and
server folders, run as background jobs whose progress can be polled)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, UploadFile

from facesearch.api import schemas
from facesearch.api.deps import Actor, CollectionAdmin, CollectionReader, Ctx, ServerContext
from facesearch.services.engine import Engine

router = APIRouter(tags=["collections"])


@router.get("/api/collections", response_model=list[schemas.CollectionOut])
def list_collections(who: CollectionReader, ctx: Ctx) -> list[schemas.CollectionOut]:
    return [schemas.CollectionOut(**c.__dict__) for c in ctx.gov.collections(who.user)]


@router.post("/api/collections", response_model=schemas.CollectionOut, status_code=201)
def create_collection(body: schemas.NewCollection, who: CollectionAdmin, ctx: Ctx) -> schemas.CollectionOut:
    info = ctx.gov.create_collection(who.user, body.name, body.legal_basis, body.retention_days,
                                     body.keep_thumbnails)
    return schemas.CollectionOut(**info.__dict__)


@router.post("/api/collections/{name}/grants")
def grant(name: str, body: schemas.GrantRequest, who: CollectionAdmin, ctx: Ctx) -> dict:
    ctx.lifecycle.grant(who.user, body.username, name)
    return {"ok": True}


@router.delete("/api/collections/{name}/grants/{username}")
def revoke(name: str, username: str, who: CollectionAdmin, ctx: Ctx) -> dict:
    ctx.lifecycle.revoke_grant(who.user, username, name)
    return {"ok": True}


def _store_upload(folder: Path, data: bytes, filename: str | None, engine: Engine) -> Path:
    """Our copy of an uploaded photo, named by a keyed hash of its content (no name, no plain hash)."""
    suffix = Path(filename or "").suffix.lower()[:8]
    path = folder / f"{engine.erasure.keyed_bytes(data)}{suffix}"
    path.write_bytes(data)
    return path


def start_ingest(ctx: ServerContext, who: Actor, name: str, paths: list[Path], kind: str,
                 allow_erased: bool = False) -> schemas.JobOut:
    engine = ctx.engine
    engine.collection(name)  # 404 before queuing

    def work(job) -> None:
        def progress(done, total, summary) -> None:
            job.done, job.total = done, total
            job.images_indexed, job.faces_indexed = summary.images_indexed, summary.faces_indexed

        try:
            summary = ctx.gov.ingest(who.user, paths, name, create=False, progress=False, on_progress=progress,
                                     allow_erased=allow_erased)
        finally:
            if kind == "upload":  # our copies that show no indexed face are not kept, also after a failure
                engine.drop_unused_uploads(paths)
        job.failed = [list(x) for x in summary.failed]
        job.skipped = [list(x) for x in summary.skipped]
        job.erased_earlier = summary.erased_earlier

    return schemas.JobOut(**ctx.jobs.submit(name, kind, work).to_dict())


@router.post("/api/collections/{name}/photos", response_model=schemas.JobOut, status_code=202)
async def upload_photos(name: str, who: CollectionAdmin, ctx: Ctx,
                        files: Annotated[list[UploadFile], File()]) -> schemas.JobOut:
    settings, engine = ctx.settings, ctx.engine
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
        return start_ingest(ctx, who, name, saved, "upload")
    except BaseException:
        # Never an orphan: an upload is either handed to a job (which catalogues or removes
        # each file) or removed here.
        engine.drop_unused_uploads(saved)
        raise


@router.post("/api/collections/{name}/ingest-folder", response_model=schemas.JobOut, status_code=202)
def ingest_folder(name: str, body: schemas.FolderIngest, who: CollectionAdmin, ctx: Ctx) -> schemas.JobOut:
    folder = ctx.limits.allowed_ingest_folder(body.path, ctx.engine.home)
    return start_ingest(ctx, who, name, [folder], "folder", body.allow_erased)


@router.get("/api/jobs/{job_id}", response_model=schemas.JobOut)
def job_status(job_id: str, who: CollectionAdmin, ctx: Ctx) -> schemas.JobOut:
    job = ctx.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return schemas.JobOut(**job.to_dict())


@router.get("/api/jobs", response_model=list[schemas.JobOut])
def list_jobs(who: CollectionAdmin, ctx: Ctx) -> list[schemas.JobOut]:
    return [schemas.JobOut(**j.to_dict()) for j in ctx.jobs.all()]
